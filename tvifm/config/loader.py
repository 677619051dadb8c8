"""Load, validate, override and save :class:`~tvifm.config.schema.Config`.

A config is built from the dataclass defaults, then a preset (a name in ``tvifm/config/presets`` or a
YAML file path; a preset may name another one under ``extends:`` and override only what differs), then
``section.key=value`` overrides with dotted keys (``data.ids_per_batch=4``; values are
parsed as YAML, so ``data.image_size=[64,32]`` and ``data.flip=false`` work). Every step is validated:
unknown keys, wrong types, values outside a ``Literal`` set or below a ``min`` in field metadata raise
:class:`~tvifm.errors.ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from tvifm.config.schema import Config
from tvifm.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "presets"
CONFIG_FILENAME = "config.yaml"
EXTENDS = "extends"
T = TypeVar("T")
# What a training run depends on (docs/design.md, "Settings by concern"): the data, the model and the
# optimisation of its stage. Captioning, serving, tracking and distributed-execution settings (and the
# device, mixed precision and names) change without touching a run's identity.
RUN_SECTIONS = ("seed", "data", "synth", "eval", "backbone", "text", "base", "joint")


def available_presets() -> list[str]:
    """Names of the presets shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(preset: str | Path | None = "tiny", overrides: Iterable[str] = ()) -> Config:
    """Build a validated config from a preset name or YAML path plus ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if preset is not None:
        data = _read_preset(preset)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    return from_dict(Config, data)


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``key=value`` and parse the value as YAML (``'8'`` -> 8, ``'[64,32]'`` -> [64, 32])."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value (for example data.trial=2)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})") from exc
    return key.strip(), value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys, types and constraints."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "config"
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s} in {where}; valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        value = _onto_field_default(fields[name], value)
        kwargs[name] = _coerce(hints[name], value, prefix + name, fields[name].metadata)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):  # cross-field rules a section declares for itself
        check()
    return obj


def _onto_field_default(f: dataclasses.Field, value: Any) -> Any:
    """A nested section given in part keeps the defaults of its field, not only of its class (the
    ``serve.ingress`` section's own ``num_cpus`` and ``max_ongoing_requests``, say)."""
    if not isinstance(value, Mapping) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return merge(dataclasses.asdict(default), value)


def load_section(
    cls: type[T], name: str, data: Mapping[str, Any] | None = None, overrides: Iterable[str] = ()
) -> T:
    """One section of the config (``cls``, called ``name`` in the root config) from a mapping of its keys
    plus ``name.key=value`` overrides, validated like a whole config (used where a process needs only its
    own section: a Serve replica, a captioner)."""
    merged = merge({}, data or {})
    for item in overrides:
        key, value = parse_override(item)
        head, _, rest = key.partition(".")
        if head != name or not rest:
            raise ConfigError(
                f"override {item!r}: {name} settings are given as {name}.key=value "
                f"(for example {name}.{next(iter(f.name for f in dataclasses.fields(cls)))}=...)"
            )
        set_dotted(merged, rest, value)
    return from_dict(cls, merged, prefix=f"{name}.")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (what :func:`save_config` writes)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, directory: str | Path) -> Path:
    """Write the resolved config as ``config.yaml`` in ``directory``; returns the file path."""
    path = Path(directory) / CONFIG_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def read_saved_config(path: str | Path) -> Config:
    """Read a config written by :func:`save_config` (a file, or a directory holding ``config.yaml``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILENAME
    if not path.is_file():
        raise ConfigError(f"{path}: no saved config here; expected the {CONFIG_FILENAME} saved with a run")
    return from_dict(Config, _load_yaml(path))


def run_settings(cfg: Config, stage: str | None = None) -> dict[str, Any]:
    """The settings a training run depends on, as plain data: :data:`RUN_SECTIONS`, without the other
    stage's section when ``stage`` is given (a finished stage-1 run is reused when only ``joint.*``
    changed, and a stage-2 run when ``base.*``), and without ``synth`` for datasets it does not make;
    ``eval.sampling`` as the gallery sampling it resolves to, so ``auto`` and its value are one run."""
    data = to_dict(cfg)
    data["eval"]["sampling"] = cfg.gallery_sampling()
    drop = {"joint": "base", "base": "joint"}.get(stage or "")
    sections = [s for s in RUN_SECTIONS if s != drop and (s != "synth" or cfg.data.dataset == "synth")]
    return {section: data[section] for section in sections}


def config_hash(cfg: Config) -> str:
    """A short stable hash of :func:`run_settings` (identifies the training a model comes from; a change
    of captioning, serving, tracking or execution settings leaves it alone)."""
    blob = json.dumps(run_settings(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _read_preset(preset: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = Path(preset)
    if path.suffix not in (".yaml", ".yml"):
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown preset {preset!r}; valid presets: {', '.join(available_presets())} "
                "(or give the path of a YAML file)"
            )
    elif not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ConfigError(f"presets extend each other in a cycle: {chain}")
    data = _load_yaml(path)
    parent = data.pop(EXTENDS, None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: {EXTENDS} must name a preset or a YAML file, got {parent!r}")
    if parent.endswith((".yaml", ".yml")) and not Path(parent).is_absolute():
        parent = str(path.parent / parent)  # relative to the extending file
    return merge(_read_preset(parent, (*seen, path.resolve())), data)


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``, section by section (lists and values are replaced, not merged)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for the dotted ``key`` ``a.b.c``, creating sections as needed."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _coerce(tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, prefix=key + ".")
    if origin in (types.UnionType, typing.Union):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, meta)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            allowed = ", ".join(map(str, choices))
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {allowed}")
        return value
    if origin is list:
        return _coerce_list(get_args(tp)[0], value, key, meta)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(get_args(tp)[1], v, f"{key}.{k}", {}) for k, v in value.items()}
    return _check_scalar(tp, value, key, meta)


def _coerce_list(item_tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    length = meta.get("length")
    if length is not None and len(value) != length:
        raise ConfigError(f"{key}: expected a list of {length} values, got {len(value)}: {list(value)!r}")
    item_meta = {k: v for k, v in meta.items() if k in ("min", "max")}
    return [_coerce(item_tp, v, f"{key}[{i}]", item_meta) for i, v in enumerate(value)]


def _yaml11_float(text: str) -> float | str:
    """YAML 1.1 reads ``3.5e-4`` and ``1e-3`` as strings; accept them as floats for float fields."""
    try:
        return float(text)
    except ValueError:
        return text


def _check_scalar(tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is float and isinstance(value, str):
        value = _yaml11_float(value)
    if (tp is int and isinstance(value, bool)) or not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{key}={value!r} is too small; it must be >= {low}")
    if high is not None and value > high:
        raise ConfigError(f"{key}={value!r} is too large; it must be <= {high}")
    return value
