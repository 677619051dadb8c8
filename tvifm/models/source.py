"""Where a model comes from (serving, evaluation, the pyfunc model): a run directory or the registry.

A *model source* is either

- a run directory (local path or ``s3://``) as training writes it (:class:`tvifm.models.run.RunDir`), or
- a registry URI ``models:/<name>@<alias>`` or ``models:/<name>/<version>``. The alias is first resolved
  to a version through ``MlflowClient.get_model_version_by_alias``, then ``models:/<name>/<version>`` is
  downloaded with ``mlflow.artifacts.download_artifacts``; its ``artifacts/checkpoint/`` folder is the
  run directory. Resolving once to a version means the weights and the reported version always agree.

MLflow is imported only when a registry URI is resolved; :func:`tvifm.models.load_model` builds the
model of a resolved source.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from tvifm.data import storage
from tvifm.errors import TvifmError
from tvifm.models.run import RunDir

REGISTRY_PREFIX = "models:/"
CHECKPOINT_SUBDIR = ("artifacts", "checkpoint")
_REGISTRY_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class ModelSourceError(TvifmError):
    """A model source is malformed, cannot be found or is not a tvifm model."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed model source: a registry entry (name + alias or version) or a checkpoint directory."""

    source: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None

    @property
    def is_registry(self) -> bool:
        """True for ``models:/`` URIs."""
        return self.name is not None


@dataclass(frozen=True)
class ModelInfo:
    """What ``GET /v1/model`` reports about the served model."""

    source: str
    name: str | None
    version: str | None
    alias: str | None
    config_hash: str
    fingerprint: str  # config hash + weights digest: identifies the embeddings a gallery was built with
    stage: str
    dim: int
    image_size: list[int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def parse_model_source(source: str) -> ModelRef:
    """Parse ``models:/name@alias``, ``models:/name/<version>`` or a checkpoint directory path/URI."""
    source = source.strip()
    if not source:
        raise ModelSourceError("serve.model is empty; give a run directory or models:/<name>@<alias>")
    if not source.startswith(REGISTRY_PREFIX):
        return ModelRef(source)
    match = _REGISTRY_RE.match(source)
    if match is None:
        raise ModelSourceError(
            f"serve.model={source!r} is not a registry URI of the form models:/<name>@<alias> "
            "or models:/<name>/<version>"
        )
    return ModelRef(source, match["name"], match["alias"], match["version"])


@dataclass(frozen=True)
class ResolvedModel:
    """A model source resolved to a local run directory, with its registry coordinates (if any)."""

    run_dir: Path
    ref: ModelRef
    version: str | None
    alias: str | None


def resolve_model(source: str, tracking_uri: str | None = None, endpoint: str | None = None) -> ResolvedModel:
    """Resolve ``source`` to a local run directory (downloading from the registry or S3 as needed)."""
    ref = parse_model_source(source)
    if ref.is_registry:
        return _resolve_registry(ref, tracking_uri)
    run_dir = _local_checkpoint(source, endpoint)
    _check_run_dir(run_dir, source)
    return ResolvedModel(run_dir, ref, None, None)


def _local_checkpoint(uri: str, endpoint: str | None) -> Path:
    if not storage.is_s3(uri):
        return Path(uri)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "tvifm-models" / digest
    try:
        return storage.download_tree(uri, cache, endpoint=endpoint)
    except storage.StorageError as err:
        raise ModelSourceError(f"cannot download the model at {uri}: {err}") from err


def _check_run_dir(run_dir: Path, source: str) -> None:
    missing = RunDir(run_dir).missing()
    if missing:
        raise ModelSourceError(
            f"{source}: not a tvifm run directory (missing {', '.join(missing)}); point serve.model at "
            "a training output directory or at models:/<name>@<alias>"
        )


def _resolve_registry(ref: ModelRef, tracking_uri: str | None) -> ResolvedModel:
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    client = mlflow.MlflowClient()
    try:
        if ref.alias is not None:
            version = client.get_model_version_by_alias(ref.name, ref.alias)
        else:
            version = client.get_model_version(ref.name, ref.version)
        local = _download_version(mlflow, str(ref.name), version)
    except MlflowException as err:
        raise ModelSourceError(f"cannot resolve {ref.source} in the MLflow registry: {err.message}") from err
    run_dir = checkpoint_dir(local)
    _check_run_dir(run_dir, f"{ref.source} (version {version.version})")
    alias = ref.alias or (",".join(sorted(version.aliases)) if getattr(version, "aliases", None) else None)
    return ResolvedModel(run_dir, ref, str(version.version), alias)


def _download_version(mlflow: Any, name: str, version: Any) -> Path:
    """Download a registered version once per machine and registry (atomic rename into a cache folder)."""
    number = str(version.version)
    key = f"{mlflow.get_registry_uri()}|{name}|{number}|{getattr(version, 'source', '')}"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / "tvifm-models" / f"{safe}-v{number}-{digest}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{safe}-v{number}-", dir=target.parent))
    uri = f"{REGISTRY_PREFIX}{name}/{number}"
    mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(staging))
    try:
        staging.rename(target)
    except OSError:  # another replica on this machine finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def checkpoint_dir(model_dir: Path) -> Path:
    """The run directory inside a downloaded MLflow model: ``artifacts/checkpoint``, else the path the
    pyfunc flavour records for its ``checkpoint`` artifact in ``MLmodel``."""
    direct = model_dir.joinpath(*CHECKPOINT_SUBDIR)
    if direct.is_dir():
        return direct
    mlmodel = model_dir / "MLmodel"
    if mlmodel.is_file():
        flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
        rel = ((flavor.get("artifacts") or {}).get("checkpoint") or {}).get("path")
        if rel:
            return model_dir / rel
    return direct


def weights_digest(run_dir: Path) -> str:
    """A short SHA-256 of the model weights file."""
    digest = hashlib.sha256()
    with RunDir(run_dir).weights.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
