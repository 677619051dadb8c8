"""Dataset-independent types: one image sample, the splits of a dataset and the evaluation sets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Modality = Literal["visible", "ir"]
MODALITIES: tuple[Modality, ...] = ("visible", "ir")


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    ``rel`` is the path relative to the dataset root with forward slashes; it is the key that joins an
    image to its Tri- text sidecar entries. ``pid`` is the dataset's own identity number (never a
    relabelled index), ``cam`` the dataset's camera number.
    """

    path: str
    rel: str
    pid: int
    cam: int
    modality: Modality


@dataclass
class EvalSet:
    """Queries and gallery of one evaluation trial of one protocol."""

    name: str
    protocol: str  # metric protocol for tvifm.eval.offline: "sysu", "regdb" or "llcm"
    query: list[Sample]
    gallery: list[Sample]
    trial: int = 0


@dataclass
class DatasetSplits:
    """Everything a loader returns for one dataset root.

    ``test_query`` and ``test_gallery`` are the full candidate sets of the default protocol (before any
    per-trial gallery sampling); the builders in :mod:`tvifm.eval.protocols` derive the per-trial sets.
    ``val_ids`` are training-side identities held out for checkpoint selection (never test identities).
    """

    name: str
    root: str
    train_visible: list[Sample]
    train_ir: list[Sample]
    test_query: list[Sample]
    test_gallery: list[Sample]
    val_ids: list[int] = field(default_factory=list)
    val_visible: list[Sample] = field(default_factory=list)
    val_ir: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def train_ids(self) -> list[int]:
        return sorted({s.pid for s in (*self.train_visible, *self.train_ir)})

    @property
    def test_ids(self) -> list[int]:
        return sorted({s.pid for s in (*self.test_query, *self.test_gallery)})


def relabel(samples: Sequence[Sample]) -> dict[int, int]:
    """Map dataset identity numbers to contiguous class indices 0..N-1, in sorted order."""
    return {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
