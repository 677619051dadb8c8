"""One trial's query and gallery images of a dataset's default test direction, for auditing the gallery
sampling against other code (``tvifm data gallery``; docs/design.md, "Gallery sampling")."""

from __future__ import annotations

import os
from typing import Any

from tvifm.data.base import EvalSet
from tvifm.data.registry import gallery_sampling, load_dataset
from tvifm.errors import ConfigError
from tvifm.eval.protocols import llcm_eval_sets, sysu_eval_sets

SYSU_STYLE = ("synth", "sysu")
AUDIT_DATASETS = (*SYSU_STYLE, "llcm")
"""The datasets whose test galleries are sampled per trial (RegDB's galleries are whole)."""


def audit_trial(
    dataset: str,
    root: str | os.PathLike[str],
    trial: int,
    *,
    search: str | None = None,
    shot: str | None = None,
    sampling: str = "auto",
    seed: int | None = None,
) -> EvalSet:
    """The evaluation set of trial ``trial`` of ``dataset`` at ``root`` in its default direction (IR
    queries, visible gallery): SYSU-MM01 and SynthTri with ``search`` (``all``/``indoor``, default
    ``all``) and ``shot`` (``single``/``multi``, default ``single``), LLCM (neither applies). The gallery
    is drawn as the evaluation draws it under ``eval.sampling=sampling`` and ``eval.seed=seed`` (default
    0; only ``seeded`` sampling uses it). Bad input raises :class:`ConfigError` naming the option."""
    if dataset not in AUDIT_DATASETS:
        raise ConfigError(
            f"dataset {dataset!r} has no per-trial gallery sampling to audit; choose one of "
            f"{', '.join(AUDIT_DATASETS)} (RegDB's galleries hold every image)"
        )
    if isinstance(trial, bool) or not isinstance(trial, int) or trial < 0:
        raise ConfigError(
            f"trial must be an integer >= 0 (the standard code's trials are 0..9), got {trial!r}"
        )
    chosen = gallery_sampling(dataset, sampling)
    if seed is not None and chosen == "standard":
        raise ConfigError(
            "a seed applies to seeded sampling only; standard sampling draws trial t with random.seed(t) "
            "(leave the seed out, or choose seeded sampling)"
        )
    if dataset not in SYSU_STYLE and (search is not None or shot is not None):
        raise ConfigError(
            f"search and shot choose SYSU-MM01 galleries; {dataset} has one protocol per direction "
            "(leave them out)"
        )
    splits = load_dataset(dataset, root)
    args: dict[str, Any] = {"trials": 1, "seed": seed or 0, "sampling": chosen, "first_trial": trial}
    if dataset in SYSU_STYLE:
        query, gallery = splits.test_query, splits.test_gallery
        return sysu_eval_sets(query, gallery, search or "all", shot or "single", **args)[0]
    return llcm_eval_sets(splits.test_gallery, splits.test_query, "ir2rgb", **args)[0]


def audit_paths(eval_set: EvalSet) -> dict[str, list[str]]:
    """``{"query": [...], "gallery": [...]}``: the set's image paths relative to the dataset root."""
    return {"query": [s.rel for s in eval_set.query], "gallery": [s.rel for s in eval_set.gallery]}


def format_audit(eval_set: EvalSet, sampling: str, shown: int = 3) -> str:
    """A short human summary of an audited trial: counts and the first ``shown`` gallery images."""
    gallery = eval_set.gallery
    ids = len({s.pid for s in gallery})
    groups = len({(s.pid, s.cam) for s in gallery})
    head = ", ".join(s.rel for s in gallery[:shown]) + (", ..." if len(gallery) > shown else "")
    return "\n".join(
        [
            f"{eval_set.name} trial {eval_set.trial} ({sampling} sampling)",
            f"query:   {len(eval_set.query)} {eval_set.query[0].modality} images "
            f"of {len({s.pid for s in eval_set.query})} identities",
            f"gallery: {len(gallery)} {gallery[0].modality} images of {ids} identities in {groups} "
            f"identity/camera groups: {head}",
            "(--json lists every path)",
        ]
    )
