"""Typed configuration of captioner fine-tuning, batch captioning and augmentation (``cfg.caption``).

Same conventions as :mod:`tvifm.config.schema`: typed fields with the tiny CPU preset's defaults, bounds
in field metadata, validated by :func:`tvifm.config.loader.from_dict`. Until the root config carries a
``caption`` section, :func:`resolve_configs` builds it from the preset's ``caption:`` mapping (if any) and
``caption.key=value`` overrides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tvifm.config import Config, load_config, parse_override
from tvifm.config.loader import _read_preset, _set_dotted, from_dict
from tvifm.errors import ConfigError

ModalityName = Literal["visible", "ir"]
CAPTION_PREFIX = "caption."


def _num(default: Any, **bounds: Any) -> Any:
    return field(default=default, metadata=bounds)


@dataclass
class CaptionConfig:
    """Captioners (BLIP), their fine-tuning, the Ray Data captioning job and text augmentation."""

    # --- captioner models -------------------------------------------------------------------------
    base_checkpoint: str | None = None  # local BLIP checkpoint dir to fine-tune; None: tiny BLIP from scratch
    captioner_dir: str = "runs/captioners"  # fine-tuning writes <dir>/rgb and <dir>/ir (local or s3://)
    rgb_checkpoint: str | None = None  # captioner used by the job for visible images; None: <dir>/rgb
    ir_checkpoint: str | None = None  # captioner for IR images; None: <captioner_dir>/ir
    image_size: int = _num(64, min=16)  # square side the tiny BLIP sees (checkpoints keep their own)
    patch_size: int = _num(8, min=2)
    vision_width: int = _num(128, min=16)
    vision_layers: int = _num(3, min=1)
    text_width: int = _num(128, min=16)
    text_layers: int = _num(2, min=1)
    heads: int = _num(4, min=1)
    vocab_size: int = _num(400, min=32)  # WordPiece vocabulary trained on the caption corpus
    max_length: int = _num(50, min=8)  # tokens, for training truncation and generate(max_length)
    num_beams: int = _num(1, min=1)
    # --- fine-tuning ------------------------------------------------------------------------------
    steps: int = _num(600, min=1)  # optimiser steps per captioner (ignored when epochs > 0)
    epochs: int = _num(0, min=0)
    batch_size: int = _num(32, min=1)
    lr: float = _num(2e-3, min=0.0)
    weight_decay: float = _num(0.01, min=0.0)
    warmup_fraction: float = _num(0.1, min=0.0, max=1.0)
    flip: bool = True  # horizontal flip augmentation while fine-tuning
    ir_text: Literal["sidecar", "captioner"] = "sidecar"  # IR targets: a paired visible image's sidecar
    # description, or the fine-tuned RGB captioner's caption of it (the paper's recipe); colours stripped
    threads: int = _num(1, min=1)  # torch threads for fine-tuning (2+ only on an otherwise idle machine)
    seed: int = 0
    # --- batch captioning job ---------------------------------------------------------------------
    modalities: list[ModalityName] = field(default_factory=lambda: ["visible", "ir"])
    output: str | None = None  # Parquet parts + report; None: <root>/Text/captions
    actors: int = _num(2, min=1)  # actor pool size per modality
    cpus_per_actor: float = _num(1.0, min=0.0)
    gpus_per_actor: float = _num(1.0, min=0.0)  # requested only when the cluster has GPUs
    threads_per_actor: int = _num(1, min=1)  # torch threads inside each actor
    infer_batch_size: int = _num(16, min=1)  # images per map_batches call
    num_cpus: int = _num(2, min=1)  # for the local Ray the job starts when none is running
    filter_ir_colours: bool = True  # strip colour words from IR captions and their rephrasings
    s3_endpoint: str | None = None  # else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
    # --- augmentation -----------------------------------------------------------------------------
    augmenter: Literal["rule", "llm", "none"] = "rule"
    llm_checkpoint: str | None = None  # local causal LM dir for augmenter=llm
    llm_temperature: float = _num(0.7, min=0.0)
    llm_max_new_tokens: int = _num(60, min=1)
    llm_batch_size: int = _num(8, min=1)
    aug_seed: int = 0


def split_overrides(overrides: Iterable[str]) -> tuple[list[str], list[str]]:
    """Separate ``caption.*`` overrides (first list, prefix removed) from the root config's (second)."""
    caption, other = [], []
    for item in overrides:
        (caption if item.startswith(CAPTION_PREFIX) else other).append(item)
    return [item[len(CAPTION_PREFIX) :] for item in caption], other


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
    """The root config and the caption config of a preset plus overrides.

    Works both before and after the root :class:`~tvifm.config.schema.Config` gains a ``caption`` field:
    without one, the preset's ``caption:`` mapping is read here and left out of the root config.
    """
    caption_items, root_items = split_overrides(overrides)
    preset_data = _read_preset(preset) if preset is not None else {}
    if "caption" in Config.__dataclass_fields__:
        cfg = load_config(preset, root_items)
        base = dict(vars(cfg.caption))  # type: ignore[attr-defined]
        return cfg, caption_config(base, caption_items)
    section = preset_data.pop("caption", None) or {}
    for item in root_items:
        _set_dotted(preset_data, *parse_override(item))
    return from_dict(Config, preset_data), caption_config(section, caption_items)
