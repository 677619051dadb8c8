"""The ``caption`` section of the config (:class:`~tvifm.config.schema.CaptionConfig`): captioners,
their fine-tuning, the Ray Data captioning job and text augmentation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tvifm.config.loader import load_section
from tvifm.config.schema import CaptionConfig


def caption_config(data: Mapping[str, Any] | None = None, overrides: Sequence[str] = ()) -> CaptionConfig:
    """A validated :class:`CaptionConfig` from a mapping of its keys plus ``caption.key=value`` overrides."""
    return load_section(CaptionConfig, "caption", data, overrides)
