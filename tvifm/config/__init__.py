"""Typed configuration: dataclasses by concern, YAML presets (``extends``) and ``section.key=value``
overrides."""

from tvifm.config.loader import (
    available_presets,
    config_hash,
    load_config,
    parse_override,
    read_saved_config,
    run_settings,
    save_config,
    to_dict,
)
from tvifm.config.schema import Config, DataConfig, EvalConfig, SynthConfig

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "SynthConfig",
    "available_presets",
    "config_hash",
    "load_config",
    "parse_override",
    "read_saved_config",
    "run_settings",
    "save_config",
    "to_dict",
]
