"""Experiment presets: YAML configs in ``tvifm/experiments/presets`` that extend a shipped preset.

Each preset is an ordinary config file (``tvifm.config.load_config(preset_path("ablation-joint"))``
trains it on its own); an experiment also applies a preset as a *layer*, the settings it adds over the
preset it extends, on top of a config resolved elsewhere (another ``--config``, command-line overrides,
a config saved with the experiment's runs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tvifm.config.loader import EXTENDS, from_dict, load_config, merge, parse_override, set_dotted, to_dict
from tvifm.config.schema import Config
from tvifm.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"


def experiment_presets() -> list[str]:
    """Names of the experiment presets shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The YAML file of the experiment preset ``name`` (``ablation-joint`` ...)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown experiment preset {name!r}; valid: {', '.join(experiment_presets())}"
        )
    return path


def load_preset(name: str, overrides: Iterable[str] = ()) -> Config:
    """The config of the experiment preset ``name`` (its whole ``extends`` chain) plus ``overrides``."""
    return load_config(preset_path(name), overrides)


def preset_layer(name: str, base: str) -> dict[str, Any]:
    """The settings the experiment preset ``name`` adds over ``base``, a preset it extends directly or
    through others (a shipped preset name such as ``tiny``, or an experiment preset name)."""
    layers: list[dict[str, Any]] = []
    path = preset_path(name)
    while True:
        data = _read(path)
        parent = data.pop(EXTENDS, None)
        layers.append(data)
        if not isinstance(parent, str) or not parent:
            raise ConfigError(f"experiment preset {name!r} does not extend {base!r}")
        if Path(parent).stem == base:
            break
        if not parent.endswith((".yaml", ".yml")):  # a shipped preset other than ``base``: the chain ends
            raise ConfigError(f"experiment preset {name!r} extends {parent!r}, not {base!r}")
        path = path.parent / parent
    out: dict[str, Any] = {}
    for layer in reversed(layers):
        out = merge(out, layer)
    return out


def with_layer(cfg: Config, layer: Mapping[str, Any], overrides: Iterable[str] = ()) -> Config:
    """``cfg`` with the settings of ``layer`` (see :func:`preset_layer`), then ``key=value`` overrides."""
    data = merge(to_dict(cfg), layer)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    return from_dict(Config, data)


def as_overrides(layer: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``layer`` as the ``section.key=value`` overrides that set the same values, in its order."""
    out: list[str] = []
    for key, value in layer.items():
        if isinstance(value, Mapping):
            out += as_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={_flow(value)}")
    return out


def _flow(value: Any) -> str:
    """A value as YAML flow text (what :func:`~tvifm.config.parse_override` reads back)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return data
