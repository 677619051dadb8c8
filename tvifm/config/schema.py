"""The typed configuration of tvifm: one dataclass per concern, one root :class:`Config`.

Every field has a type the loader checks and a default (the tiny CPU preset's value). Closed sets of
choices are ``Literal`` types whose values the error messages list; numeric bounds live in field
metadata (``min``/``max``; ``length`` for fixed-size lists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def _num(default: Any, **bounds: Any) -> Any:
    return field(default=default, metadata=bounds)


def _size(height: int, width: int) -> Any:
    return field(default_factory=lambda: [height, width], metadata={"length": 2, "min": 8})


@dataclass
class SynthConfig:
    """SynthTri generation (DESIGN.md section 3)."""

    ids: int = _num(240, min=8)
    seed: int = 0
    image_size: list[int] = _size(96, 48)  # [height, width]


@dataclass
class DataConfig:
    """Which dataset to read and how batches are drawn from it."""

    dataset: Literal["synth", "sysu", "regdb", "llcm"] = "synth"
    root: str = "data/synthtri"
    trial: int = _num(1, min=1, max=10)  # RegDB split
    image_size: list[int] = _size(96, 48)  # [height, width] fed to the model
    ids_per_batch: int = _num(8, min=2)  # P
    images_per_modality: int = _num(4, min=1)  # K visible + K IR per identity
    channel_aug: bool = True
    pad: int = _num(4, min=0)
    flip: bool = True
    num_workers: int = _num(0, min=0)


@dataclass
class EvalConfig:
    """Evaluation protocols (DESIGN.md section 4)."""

    search: Literal["all", "indoor"] = "all"
    shot: Literal["single", "multi"] = "single"
    trials: int = _num(10, min=1)
    seed: int = 0
    max_rank: int = _num(20, min=1)
    batch_size: int = _num(128, min=1)


@dataclass
class Config:
    """Root configuration; presets in ``tvifm/config/presets/*.yaml`` override these defaults."""

    name: str = "tiny"
    seed: int = 0
    out_dir: str = "runs"
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
