"""Diagnostics of trained runs on their validation identities (never the test identities): what the
ensemble's terms do, how stage 1's IR query errs, which stage-2 training is chosen and whether a run was
still improving. ``docs/ablation.md`` reports them over seeds.

Every figure is a percentage. Runs are read through :class:`~tvifm.models.run.RunDir` and
:func:`~tvifm.models.load_run`; query embeddings come from the model
(:meth:`~tvifm.models.tvifm.TVIFM.query_embeddings`, whose ``ensemble`` is :func:`~tvifm.models.query.mer`),
and the validation identities and their trials are those of :class:`~tvifm.eval.evaluator.ValidationSet`
with the test protocol's ``eval.trials`` gallery samplings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tvifm.data.base import DatasetSplits, EvalSet, Sample
from tvifm.data.sidecars import TextIndex
from tvifm.errors import TvifmError
from tvifm.models.factory import LoadedModel
from tvifm.models.query import MER_TERMS
from tvifm.models.run import RunDir

# MER with its terms one at a time: the equal-weight mean of the unit embeddings named, per label
MER_TERM_SUMS: dict[str, tuple[str, ...]] = {
    "fusion": ("fusion",),
    "fusion + text": ("fusion", "text"),
    "fusion + IR": ("fusion", "ir"),
    "fusion + IR + text (MER)": MER_TERMS,
}
# one camera's images as queries against every image of another camera, validation identities
WITHIN = {"IR to IR": (3, 6), "visible to visible": (1, 2), "IR to visible": (3, 1)}
CHOICE_MODES = ("fusion", "text", "ensemble")


@dataclass
class ValidationRun:
    """A run's model with its dataset splits, captions and the all-search trials on its validation ids."""

    loaded: LoadedModel
    splits: DatasetSplits
    text: TextIndex
    sets: list[EvalSet]

    @property
    def size(self) -> list[int]:
        """The model's input size."""
        return list(self.loaded.config.data.image_size)


def validation_run(run_dir: str | Path) -> ValidationRun:
    """The model of ``run_dir`` (on the CPU) and the validation trials it was selected on, with
    ``eval.trials`` gallery samplings (the test protocol's number) instead of ``eval.val_trials``."""
    from tvifm.data.registry import load_dataset
    from tvifm.data.sidecars import load_text_for
    from tvifm.data.storage import local_dataset
    from tvifm.engine.data import ensure_validation
    from tvifm.eval.evaluator import ValidationSet
    from tvifm.models.factory import load_run

    loaded = load_run(run_dir)
    cfg = loaded.config
    data = cfg.data
    splits = load_dataset(data.dataset, local_dataset(data.root), data.trial)
    splits = ensure_validation(splits, data.val_fraction, cfg.seed)
    text = load_text_for(splits)
    trials = replace(cfg, eval=replace(cfg.eval, val_trials=cfg.eval.trials))
    validation = ValidationSet.from_splits(splits, text, trials)
    return ValidationRun(loaded, splits, text, validation.sets[validation.name])


def _rank1(sets: list[EvalSet], queries: Mapping[Any, Any], gallery: Mapping[Any, Any]) -> float:
    from tvifm.eval import evaluate_sets

    return 100 * float(evaluate_sets(sets, queries, gallery, "cosine").cmc[0])


def mer_terms(run_dir: str | Path) -> dict[str, float]:
    """All-search Rank-1 on the validation identities of each equal-weight sum in MER_TERM_SUMS (the
    last is the model's own ensemble query)."""
    from tvifm.eval.embeddings import build_query_bank, gallery_embeddings

    run = validation_run(run_dir)
    model, cfg = run.loaded.model, run.loaded.config
    queries = list(dict.fromkeys(s for es in run.sets for s in es.query))
    gallery = list(dict.fromkeys(s for es in run.sets for s in es.gallery))
    g_map = dict(zip(gallery, gallery_embeddings(model, gallery, run.size).numpy(), strict=True))
    pool = [s for es in run.sets for s in es.gallery]
    modes = (*MER_TERMS, "ensemble")
    bank = build_query_bank(model, queries, pool, run.text, run.size, modes=modes, seed=cfg.eval.seed)
    out = {}
    for name, terms in MER_TERM_SUMS.items():
        if set(terms) == set(MER_TERMS):
            query = bank.embeddings["ensemble"]
        else:
            query = torch.stack([bank.embeddings[t] for t in terms]).mean(dim=0)
        out[name] = _rank1(run.sets, dict(zip(queries, query.numpy(), strict=True)), g_map)
    return out


def stage1_figures(run_dir: str | Path) -> dict[str, float]:
    """Stage 1's retrieval on the validation identities, from one embedding of their images.

    ``IR identity`` and ``IR family``: all-search Rank-1 of the IR queries, scored by identity and by
    SynthTri family (the same ranking with every identity replaced by its family, whose members share
    every captioned attribute). Family minus identity is how often the top match is a relative; 100
    minus family, how often it is a stranger.

    One entry per camera pair of WITHIN: Rank-1 of one camera's images against every image of the
    other. The pairs have the same shape, so within-modality and cross-modality figures compare
    directly: their difference is what crossing the modality costs, apart from what IR cannot see."""
    from tvifm.captioning.quality import read_truth
    from tvifm.eval.embeddings import gallery_embeddings

    run = validation_run(run_dir)
    samples = [*run.splits.val_visible, *run.splits.val_ir]
    embeddings = gallery_embeddings(run.loaded.model, samples, run.size).numpy()
    feats = dict(zip(samples, embeddings, strict=True))
    family = {pid: attrs["family"] for pid, attrs in read_truth(run.loaded.config.data.root).items()}

    def fam(sample: Sample) -> Sample:
        return replace(sample, pid=family[sample.pid])

    fam_sets = [
        replace(es, query=[fam(s) for s in es.query], gallery=[fam(s) for s in es.gallery])
        for es in run.sets
    ]
    fam_feats = {fam(s): f for s, f in feats.items()}
    out = {
        "IR identity": _rank1(run.sets, feats, feats),
        "IR family": _rank1(fam_sets, fam_feats, fam_feats),
    }
    for name, (query_cam, gallery_cam) in WITHIN.items():
        query = [s for s in samples if s.cam == query_cam]
        pair = EvalSet(name, "regdb", query, [s for s in samples if s.cam == gallery_cam])
        out[name] = _rank1([pair], feats, feats)
    return out


def choice_figures(runs: Mapping[str, Path], choice: Mapping[str, str]) -> dict[str, float]:
    """Validation all-search Rank-1 of each training in ``choice`` (label -> run key) at its selected
    checkpoint (the epoch checkpoint selection keeps), per query mode of CHOICE_MODES:
    ``{"<label> / <mode>": rank1}``."""
    out = {}
    for label, key in choice.items():
        best = RunDir(runs[key]).meta()["best_val"]
        out.update({f"{label} / {mode}": 100 * best[mode]["rank1"] for mode in CHOICE_MODES})
    return out


def final_losses(runs: Mapping[str, Path], choice: Mapping[str, str]) -> dict[str, float]:
    """The identity cross-entropy of the last training epoch of each run in ``choice`` (label -> key):
    ``{"<label> / final ce": loss}``."""
    out = {}
    for label, key in choice.items():
        out[f"{label} / final ce"] = RunDir(runs[key]).history()[-1]["losses"]["ce"]
    return out


def late_gains(runs: Mapping[str, Path], late: Mapping[str, tuple[str, str]]) -> dict[str, float]:
    """Validation Rank-1 (percent points) gained between the last two evaluations of a run, per entry of
    ``late`` (name -> (run key, query mode)): positive when the schedule ended while the run was still
    improving. ``{"<name> late gain": points}``."""
    out = {}
    for name, (key, mode) in late.items():
        rank1 = [epoch["val"][mode]["rank1"] for epoch in RunDir(runs[key]).history() if epoch["val"]]
        if len(rank1) < 2:
            raise TvifmError(f"{runs[key]}: {len(rank1)} validation(s); a late gain needs two")
        out[f"{name} late gain"] = 100 * (rank1[-1] - rank1[-2])
    return out
