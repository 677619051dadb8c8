"""The dataset registry: everything tvifm knows about a dataset, in one :class:`DatasetSpec` per name.

A spec owns the dataset's on-disk layout (a one-line description for error messages), its splits
(``load``), which modality each image of the layout belongs to (``modality_of``, what the captioning job
asks), its standard evaluation protocols (``protocols``, what validation and offline evaluation ask) and
the gallery sampling ``eval.sampling=auto`` means for it (``sampling``, see :func:`gallery_sampling`).
The command line and the config take their dataset choices from :func:`dataset_names`; an unknown name
raises :class:`~tvifm.errors.ConfigError` listing the valid ones (see ``docs/design.md``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tvifm.data import llcm, regdb, sysu
from tvifm.data.base import DatasetSplits, EvalSet, Modality, Sample
from tvifm.data.images import require_dir
from tvifm.errors import ConfigError
from tvifm.eval.protocols import SAMPLINGS, llcm_eval_sets, regdb_eval_sets, sysu_eval_sets

ProtocolSets = dict[str, list[EvalSet]]
"""Evaluations by name, each a list of per-trial query/gallery sets."""


@dataclass(frozen=True)
class ProtocolInputs:
    """What a dataset's protocols are built from: the visible and IR samples of a split, ``trials``
    gallery samplings seeded by ``seed``, the ``shot`` of SYSU-style galleries, the RegDB split
    ``trial_id`` recorded on RegDB's single set and the gallery ``sampling`` (``"standard"`` or
    ``"seeded"``; :func:`protocol_sets` resolves ``eval.sampling``). Each builder uses what its protocol
    needs."""

    visible: Sequence[Sample]
    ir: Sequence[Sample]
    trials: int
    seed: int
    shot: str = "single"
    trial_id: int = 0
    sampling: str = "seeded"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its name, layout, splits, modality mapping and evaluation protocols.

    - ``layout``: one line describing the files a root must hold (quoted by loader errors).
    - ``load(root, trial)``: the :class:`DatasetSplits` of an existing root (``trial`` selects RegDB's
      split 1..10; the other datasets have one fixed split and ignore it).
    - ``modality_of(rel)``: ``"visible"``, ``"ir"`` or ``None`` (not an image of the dataset) for a path
      relative to the root, ``/``-separated.
    - ``protocols(inputs)``: every standard evaluation of the given :class:`ProtocolInputs`, by name; the
      first entry is the one validation selects on.
    - ``sampling``: the gallery sampling of ``eval.sampling=auto`` (``"standard"``: the published code's
      draws, for the real datasets; ``"seeded"``), or ``None`` when the protocols sample no gallery.
    - ``caption_key(rel)``: the form the dataset's published captions key an image by, when it is not
      ``rel`` (LLCM's test images), or ``None``.
    """

    name: str
    layout: str
    load: Callable[[Path, int], DatasetSplits]
    modality_of: Callable[[str], Modality | None]
    protocols: Callable[[ProtocolInputs], ProtocolSets]
    sampling: str | None = None
    caption_key: Callable[[str], str] | None = None


def sysu_protocols(p: ProtocolInputs) -> ProtocolSets:
    """SYSU-MM01 and SynthTri: all-search and indoor-search IR->RGB with ``shot`` galleries, plus RGB->IR
    (1 IR image per identity and camera per trial). ``trial_id`` is unused (one fixed split)."""
    sets = {
        f"all-{p.shot}": sysu_eval_sets(p.ir, p.visible, "all", p.shot, p.trials, p.seed, p.sampling),
        f"indoor-{p.shot}": sysu_eval_sets(p.ir, p.visible, "indoor", p.shot, p.trials, p.seed, p.sampling),
        "rgb2ir": llcm_eval_sets(p.visible, p.ir, "rgb2ir", p.trials, p.seed, p.sampling),
    }
    for es in sets["rgb2ir"]:
        es.name = "rgb2ir"
    return sets


def regdb_protocols(p: ProtocolInputs) -> ProtocolSets:
    """RegDB: every image against every image of the other modality, IR->RGB then RGB->IR, recorded as
    split ``trial_id``. ``trials``, ``seed``, ``shot`` and ``sampling`` are unused (RegDB's trials are its
    splits)."""
    return {d: regdb_eval_sets(p.visible, p.ir, d, p.trial_id) for d in ("ir2rgb", "rgb2ir")}


def llcm_protocols(p: ProtocolInputs) -> ProtocolSets:
    """LLCM: IR->RGB then RGB->IR with ``trials`` gallery samplings. ``shot`` and ``trial_id`` are unused."""
    return {d: llcm_eval_sets(p.visible, p.ir, d, p.trials, p.seed, p.sampling) for d in ("ir2rgb", "rgb2ir")}


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "synth",
            "SynthTri in the " + sysu.LAYOUT,
            lambda root, trial: sysu.load_sysu(root, name="synth"),
            sysu.modality_of,
            sysu_protocols,
            sampling="seeded",
        ),
        DatasetSpec(
            "sysu",
            sysu.LAYOUT,
            lambda root, trial: sysu.load_sysu(root, name="sysu"),
            sysu.modality_of,
            sysu_protocols,
            sampling="standard",
        ),
        DatasetSpec("regdb", regdb.LAYOUT, regdb.load_regdb, regdb.modality_of, regdb_protocols),
        DatasetSpec(
            "llcm",
            llcm.LAYOUT,
            lambda root, trial: llcm.load_llcm(root),
            llcm.modality_of,
            llcm_protocols,
            sampling="standard",
            caption_key=llcm.caption_key,
        ),
    )
}
"""Every dataset tvifm can read, by name (the order in which choices are listed)."""


def dataset_names() -> tuple[str, ...]:
    """The valid dataset names, in registry order."""
    return tuple(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; unknown names raise :class:`ConfigError` listing the valid ones."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}") from None


SAMPLING_SETTINGS = ("auto", *SAMPLINGS)
"""The values of ``eval.sampling``: ``auto`` (the dataset's own, :attr:`DatasetSpec.sampling`) or one of
:data:`tvifm.eval.protocols.SAMPLINGS`."""


def gallery_sampling(dataset: str, setting: str = "auto") -> str | None:
    """The gallery sampling ``dataset``'s protocols use under ``eval.sampling=setting``: the spec's own
    for ``"auto"``, else ``setting``; ``None`` for a dataset whose protocols sample no gallery (RegDB).
    Unknown names and settings raise :class:`ConfigError` listing the valid ones."""
    spec = get_spec(dataset)
    if setting not in SAMPLING_SETTINGS:
        raise ConfigError(f"eval.sampling must be one of {', '.join(SAMPLING_SETTINGS)}, got {setting!r}")
    if spec.sampling is None:
        return None
    return spec.sampling if setting == "auto" else setting


def load_dataset(name: str, root: str | os.PathLike[str], trial: int = 1) -> DatasetSplits:
    """Load dataset ``name`` from ``root``.

    ``trial`` selects the RegDB split (1..10); SYSU-MM01, SynthTri and LLCM have one fixed split (their
    evaluation trials are gallery samplings done by the protocols) and ignore it.
    """
    spec = get_spec(name)
    base = require_dir(Path(os.path.abspath(root)), spec.layout)
    return spec.load(base, trial)


def protocol_sets(
    dataset: str,
    visible: Sequence[Sample],
    ir: Sequence[Sample],
    *,
    trials: int,
    seed: int,
    shot: str = "single",
    trial_id: int = 0,
    sampling: str = "auto",
) -> ProtocolSets:
    """Every standard evaluation of ``dataset`` on the given samples, by name (its spec's ``protocols``,
    galleries drawn by :func:`gallery_sampling` of ``sampling``; unknown names raise
    :class:`ConfigError` listing the valid ones)."""
    chosen = gallery_sampling(dataset, sampling) or "seeded"  # None: no gallery to sample (RegDB)
    inputs = ProtocolInputs(visible, ir, trials, seed, shot, trial_id, chosen)
    return get_spec(dataset).protocols(inputs)


load = load_dataset
"""Short alias of :func:`load_dataset`: ``load("synth", root)``."""
