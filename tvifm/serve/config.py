"""Typed configuration of the retrieval service (``cfg.serve`` once the root config carries it).

Same conventions as :mod:`tvifm.config.schema`: typed fields whose defaults suit one CPU node, closed sets
as ``Literal``, numeric bounds in field metadata, validated by :func:`tvifm.config.loader.from_dict`.
:func:`serve_config` builds one from a mapping (the ``args`` of ``tvifm.serve.app:build_app`` or a
preset's ``serve:`` section) plus ``key=value`` overrides (``embedder.max_replicas=4``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tvifm.config.loader import _set_dotted, from_dict, parse_override, to_dict
from tvifm.errors import ConfigError

MIB = 1024 * 1024
PREFIX = "serve."


def _num(default: Any, **bounds: Any) -> Any:
    return field(default=default, metadata=bounds)


@dataclass
class ScalingConfig:
    """Replicas and resources of one Serve deployment.

    With ``autoscale`` off the deployment runs ``num_replicas`` replicas; with it on, Serve keeps between
    ``min_replicas`` and ``max_replicas``, aiming at ``target_ongoing_requests`` requests per replica.
    """

    num_replicas: int = _num(1, min=1)
    autoscale: bool = False
    min_replicas: int = _num(1, min=0)
    max_replicas: int = _num(4, min=1)
    target_ongoing_requests: float = _num(2.0, min=0.1)
    max_ongoing_requests: int = _num(32, min=1)
    num_cpus: float = _num(1.0, min=0.0)
    num_gpus: float = _num(0.0, min=0.0)


@dataclass
class ServeConfig:
    """The retrieval service: model source, gallery storage, limits, auth, batching and scaling."""

    # --- model --------------------------------------------------------------------------------------
    # a run directory (local or s3://) or an MLflow registry URI models:/<name>@<alias> | models:/<name>/<v>
    model: str = "models:/tvifm@production"
    mlflow_tracking_uri: str | None = None  # else MLFLOW_TRACKING_URI
    ir_captioner: str | None = None  # BLIP captioner dir (local or s3://) generating missing IR captions
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    threads: int = _num(1, min=1)  # torch threads per embedding replica
    # --- gallery --------------------------------------------------------------------------------------
    gallery_uri: str = "runs/gallery"  # local folder or s3://bucket/prefix; persisted on every change
    keep_images: bool = True  # store gallery images so a new model can re-embed the gallery
    s3_endpoint: str | None = None  # else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
    max_segments: int = _num(32, min=1)  # compact the gallery's segment log beyond this many segments
    # --- HTTP -----------------------------------------------------------------------------------------
    host: str = "127.0.0.1"  # for jobs/serve.py (a RayService sets its own http_options)
    port: int = _num(8000, min=0, max=65535)
    route_prefix: str = "/"
    auth_token_env: str | None = None  # name of the env var holding the bearer token; None: no auth
    # --- limits ---------------------------------------------------------------------------------------
    max_request_bytes: int = _num(32 * MIB, min=1024)  # 413 beyond this
    max_image_bytes: int = _num(8 * MIB, min=64)  # one encoded image; 413 beyond this
    max_image_pixels: int = _num(16_000_000, min=64)  # width x height; 413 beyond this
    max_text_chars: int = _num(2000, min=1)
    max_metadata_bytes: int = _num(4096, min=2)  # one gallery item's metadata as JSON
    max_items_per_request: int = _num(256, min=1)  # POST /v1/gallery
    default_top_k: int = _num(10, min=1)
    max_top_k: int = _num(100, min=1)
    # --- batching and scaling -------------------------------------------------------------------------
    max_batch_size: int = _num(16, min=1)  # @serve.batch of image/text encoding and of searches
    batch_wait_timeout_s: float = _num(0.005, min=0.0)
    ingress: ScalingConfig = field(default_factory=lambda: ScalingConfig(num_cpus=0.25))
    embedder: ScalingConfig = field(default_factory=ScalingConfig)
    index_num_cpus: float = _num(0.5, min=0.0)  # the single gallery-index replica
    index_threads: int = _num(1, min=1)  # torch threads of the index (exact search)
    index_max_ongoing_requests: int = _num(256, min=1)  # >= max_batch_size so searches can batch


def serve_config(data: Mapping[str, Any] | None = None, overrides: Sequence[str] = ()) -> ServeConfig:
    """A validated :class:`ServeConfig` from a mapping plus ``key=value`` overrides (dotted for sections).

    Unknown keys, wrong types and out-of-range values raise :class:`~tvifm.errors.ConfigError` naming
    the key and what is allowed.
    """
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in (data or {}).items()}
    for item in overrides:
        _set_dotted(merged, *parse_override(item))
    cfg = from_dict(ServeConfig, merged, prefix=PREFIX)
    check_config(cfg)
    return cfg


def check_config(cfg: ServeConfig) -> None:
    """Reject combinations of values that are each valid but contradict each other."""
    if cfg.default_top_k > cfg.max_top_k:
        raise ConfigError(f"serve.default_top_k={cfg.default_top_k} exceeds serve.max_top_k={cfg.max_top_k}")
    if cfg.max_image_bytes > cfg.max_request_bytes:
        raise ConfigError(
            f"serve.max_image_bytes={cfg.max_image_bytes} exceeds "
            f"serve.max_request_bytes={cfg.max_request_bytes}"
        )
    for name in ("ingress", "embedder"):
        scaling: ScalingConfig = getattr(cfg, name)
        if scaling.autoscale and scaling.min_replicas > scaling.max_replicas:
            raise ConfigError(
                f"serve.{name}.min_replicas={scaling.min_replicas} exceeds "
                f"serve.{name}.max_replicas={scaling.max_replicas}"
            )


def load_serve_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ServeConfig:
    """A :class:`ServeConfig` from a YAML file plus overrides.

    The file holds either the fields at top level or a root-config file with a ``serve:`` section.
    Overrides may carry the ``serve.`` prefix (``serve.port=9000`` and ``port=9000`` are the same).
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = _load_yaml(Path(path))
        section = data.get("serve")
        data = section if isinstance(section, Mapping) else data
    stripped = [o[len(PREFIX) :] if o.startswith(PREFIX) else o for o in overrides]
    return serve_config(data, stripped)


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"serve config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of serve settings")
    return data


def config_dict(cfg: ServeConfig) -> dict[str, Any]:
    """Plain data of ``cfg`` (what ``build_app`` takes as ``args``)."""
    return to_dict(cfg)
