"""The ``caption`` section of the config (:class:`~tvifm.config.schema.CaptionConfig`): captioners,
their fine-tuning, the Ray Data captioning job and text augmentation; helpers to build it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tvifm.config import Config, load_config, parse_override
from tvifm.config.loader import from_dict
from tvifm.config.schema import CaptionConfig
from tvifm.errors import ConfigError

CAPTION_PREFIX = "caption."


def caption_config(data: dict[str, Any] | None = None, overrides: Sequence[str] = ()) -> CaptionConfig:
    """A validated :class:`CaptionConfig` from a mapping plus ``key=value`` overrides (no prefix)."""
    merged = dict(data or {})
    for item in overrides:
        key, value = parse_override(item)
        if "." in key:
            raise ConfigError(f"caption.{key}: the caption section has no sub-sections")
        merged[key] = value
    return from_dict(CaptionConfig, merged, prefix=CAPTION_PREFIX)


def resolve_configs(
    preset: str | Path | None = "tiny", overrides: Sequence[str] = ()
) -> tuple[Config, CaptionConfig]:
    """The root config of a preset plus overrides, and its ``caption`` section."""
    cfg = load_config(preset, overrides)
    return cfg, cfg.caption
