"""The dataset registry: one entry per dataset name, each a loader plus a one-line layout summary."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tvifm.data import llcm, regdb, sysu
from tvifm.data.base import DatasetSplits
from tvifm.data.images import require_dir
from tvifm.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one dataset: ``load(root, trial)`` and the layout a root must have."""

    name: str
    load: Callable[[Path, int], DatasetSplits]
    layout: str


DATASETS: dict[str, DatasetSpec] = {
    "sysu": DatasetSpec("sysu", lambda root, trial: sysu.load_sysu(root, name="sysu"), sysu.LAYOUT),
    "regdb": DatasetSpec("regdb", regdb.load_regdb, regdb.LAYOUT),
    "llcm": DatasetSpec("llcm", lambda root, trial: llcm.load_llcm(root), llcm.LAYOUT),
    "synth": DatasetSpec(
        "synth", lambda root, trial: sysu.load_sysu(root, name="synth"), "SynthTri in the " + sysu.LAYOUT
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; unknown names raise :class:`ConfigError` listing the valid ones."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(DATASETS)
        raise ConfigError(f"unknown dataset {name!r}; valid names: {valid}") from None


def load_dataset(name: str, root: str | os.PathLike[str], trial: int = 1) -> DatasetSplits:
    """Load dataset ``name`` from ``root``.

    ``trial`` selects the RegDB split (1..10); SYSU-MM01, SynthTri and LLCM have one fixed split (their
    evaluation trials are gallery samplings done by the protocols) and ignore it.
    """
    spec = get_spec(name)
    base = require_dir(Path(os.path.abspath(root)), spec.layout)
    return spec.load(base, trial)


load = load_dataset
"""Short alias of :func:`load_dataset`: ``load("synth", root)``."""
