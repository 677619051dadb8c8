"""The ``serve`` section of the config (:class:`~tvifm.config.schema.ServeConfig`) and its helpers.

:func:`serve_config` builds one from a mapping (the ``args`` of ``tvifm.serve.app:build_app`` or a
preset's ``serve:`` section) plus ``key=value`` overrides (``embedder.max_replicas=4``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tvifm.config.loader import load_section, to_dict
from tvifm.config.schema import ServeConfig
from tvifm.errors import ConfigError


def serve_config(data: Mapping[str, Any] | None = None, overrides: Sequence[str] = ()) -> ServeConfig:
    """A validated :class:`ServeConfig` from a mapping plus ``serve.key=value`` overrides.

    Unknown keys, wrong types and out-of-range values raise :class:`~tvifm.errors.ConfigError` naming
    the key and what is allowed.
    """
    return load_section(ServeConfig, "serve", data, overrides)


def load_serve_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ServeConfig:
    """A :class:`ServeConfig` from a YAML file plus overrides.

    The file holds either the fields at top level or a root-config file with a ``serve:`` section;
    overrides are ``serve.key=value`` as in every job.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = _load_yaml(Path(path))
        section = data.get("serve")
        data = section if isinstance(section, Mapping) else data
    return serve_config(data, overrides)


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
