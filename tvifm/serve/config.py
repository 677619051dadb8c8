"""The ``serve`` section of the config (:class:`~tvifm.config.schema.ServeConfig`) and its helpers.

:func:`serve_config` builds one from a mapping (the ``args`` of ``tvifm.serve.app:build_app`` or a
preset's ``serve:`` section) plus ``key=value`` overrides (``embedder.max_replicas=4``);
:func:`index_spec` gives the gallery index's search settings.
:func:`read_token` reads the API's bearer token where the ingress replica runs: the settings only ever
name where the token is (a file, an environment variable), so it never travels through Ray, whose
runtime environments and deployment configs end up in its logs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tvifm.config.loader import load_section, to_dict
from tvifm.config.schema import ServeConfig
from tvifm.errors import ConfigError
from tvifm.serve.vectors import IndexSpec


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


def index_spec(cfg: ServeConfig) -> IndexSpec:
    """How the gallery index searches (``serve.index`` and the ``serve.index_*`` settings)."""
    return IndexSpec(
        kind=cfg.index,
        nlist=cfg.index_nlist,
        nprobe=cfg.index_nprobe,
        hnsw_m=cfg.index_hnsw_m,
        ef_construction=cfg.index_ef_construction,
        ef_search=cfg.index_ef_search,
        min_items=cfg.index_min_items,
        exact_subset_max=cfg.index_exact_subset_max,
        seed=cfg.index_seed,
    )


def read_token(cfg: ServeConfig) -> str | None:
    """The bearer token of the API, or None when auth is off (neither setting given).

    ``serve.auth_token_file`` is read when that file exists here (e.g. a Kubernetes Secret mounted into
    the pod); otherwise ``serve.auth_token_env`` names an environment variable that must already be set
    here (e.g. from a Secret with ``secretKeyRef``). Surrounding whitespace is stripped. A configured but
    missing, unreadable or empty token raises :class:`~tvifm.errors.ConfigError` naming what was tried,
    so a service meant to require auth never starts without it.
    """
    if not (cfg.auth_token_file or cfg.auth_token_env):
        return None
    tried = []
    if cfg.auth_token_file:
        path = Path(cfg.auth_token_file)
        if path.exists() or not cfg.auth_token_env:
            return _token_from_file(path)
        tried.append(f"serve.auth_token_file={path} does not exist here")
    token = os.environ.get(cfg.auth_token_env or "", "").strip()
    if not token:
        tried.append(f"serve.auth_token_env={cfg.auth_token_env}: that variable is empty or unset")
        raise ConfigError(
            "no bearer token for the API where the ingress replica runs: " + "; ".join(tried) + ". Mount "
            "the token file there (or set the variable in the Ray cluster's environment), or turn auth off"
        )
    return token


def _token_from_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as err:
        raise ConfigError(
            f"serve.auth_token_file={path} does not exist where the ingress replica runs; mount the token "
            "Secret there or point the setting at the token file"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"serve.auth_token_file={path} cannot be read: {err}") from err
    if not token:
        raise ConfigError(f"serve.auth_token_file={path} is empty; write the bearer token into it")
    return token
