"""Per-trial evaluation sets of SYSU-MM01, RegDB and LLCM, and their trial-averaged evaluation.

The builders are pure functions of their arguments. Gallery sampling (``sampling``) is one of
:data:`SAMPLINGS` (docs/design.md, "Gallery sampling"):

- ``"standard"``: the draws of the standard evaluation code (AGW's ``process_gallery_sysu``, DEEN's
  ``process_gallery_llcm``): trial ``t`` seeds Python's ``random`` with ``t``, then takes one
  ``choice`` of the sorted files of each identity and camera (multi-shot, which that code lacks: a
  ``sample`` of up to 10), identities in ascending zero-padded id order and cameras in ascending order.
  ``seed`` is not used.
- ``"seeded"``: a NumPy generator seeded with ``(seed, trial)`` draws each group's images.

Either way each trial gets its own gallery, a re-run gets the same one whatever the order of the
candidate lists, and a sampled gallery lists its identity/camera groups in ascending ``(pid, cam)``
order (standard: by the zero-padded id string, the same order for ids below 10000) and, within a group,
images in ascending ``rel`` order.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tvifm.data.base import EvalSet, Modality, Sample
from tvifm.errors import ConfigError, DatasetError
from tvifm.eval.metrics import EvaluationError, RetrievalResult, TrialSummary, evaluate, mean_results
from tvifm.eval.rerank import Rerank

SYSU_QUERY_CAMS = (3, 6)
SYSU_GALLERY_CAMS: dict[str, tuple[int, ...]] = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
SYSU_SHOTS: dict[str, int] = {"single": 1, "multi": 10}
DIRECTIONS: dict[str, tuple[Modality, Modality]] = {"ir2rgb": ("ir", "visible"), "rgb2ir": ("visible", "ir")}
DISTANCES = ("cosine", "euclidean")
SAMPLINGS = ("standard", "seeded")

Embedder = Callable[[list[Sample]], Any] | Mapping[Sample, Any]


def sysu_eval_sets(
    query: Sequence[Sample],
    gallery: Sequence[Sample],
    search: str = "all",
    shot: str = "single",
    trials: int = 10,
    seed: int = 0,
    sampling: str = "seeded",
    *,
    first_trial: int = 0,
) -> list[EvalSet]:
    """SYSU-MM01 evaluation sets, one per trial.

    Queries are the IR samples of cameras 3 and 6 among ``query`` (the same, all of them, every trial).
    Gallery candidates are the visible samples among ``gallery`` from cameras 1, 2, 4, 5 (``search="all"``)
    or 1, 2 (``"indoor"``); each trial keeps 1 random image per (identity, camera) for ``shot="single"``
    and up to 10 for ``"multi"``, drawn by ``sampling`` (module docstring). Other samples in the lists are
    left out. Sets are named ``sysu-<search>-<shot>`` with protocol ``"sysu"`` and ``trial``
    ``first_trial`` .. ``first_trial + trials - 1``.
    """
    cams = _choice(search, SYSU_GALLERY_CAMS, "sysu search")
    per_group = _choice(shot, SYSU_SHOTS, "sysu shot")
    numbers = _trial_numbers(trials, first_trial, seed, sampling)
    what = f"sysu ({search} search)"
    queries = _select(query, "ir", SYSU_QUERY_CAMS, what, "query")
    candidates = _select(gallery, "visible", cams, what, "gallery")
    name = f"sysu-{search}-{shot}"
    return [
        EvalSet(
            name, "sysu", list(queries), sample_gallery(candidates, per_group, t, sampling, seed), trial=t
        )
        for t in numbers
    ]


def regdb_eval_sets(
    visible: Sequence[Sample], ir: Sequence[Sample], direction: str = "ir2rgb", trial: int = 0
) -> list[EvalSet]:
    """The single RegDB evaluation set of one split: every image of the query modality against every
    image of the other (``direction`` ``"ir2rgb"``, the paper's, or ``"rgb2ir"``).

    RegDB's trials are different identity splits, loaded by the caller; ``trial`` (any integer >= 0, e.g.
    the split number 1..10) is recorded on the set. ``visible``/``ir`` must hold only samples of that
    modality. Returns a one-element list named ``regdb-<direction>`` with protocol ``"regdb"``.
    """
    query_modality, _ = _choice(direction, DIRECTIONS, "regdb direction")
    _check_count(trial, "trial", 0)
    queries, gallery = _split_direction(visible, ir, query_modality, f"regdb ({direction})")
    return [EvalSet(f"regdb-{direction}", "regdb", queries, gallery, trial=trial)]


def llcm_eval_sets(
    visible: Sequence[Sample],
    ir: Sequence[Sample],
    direction: str = "ir2rgb",
    trials: int = 10,
    seed: int = 0,
    sampling: str = "seeded",
    *,
    first_trial: int = 0,
) -> list[EvalSet]:
    """LLCM evaluation sets, one per trial: every image of the query modality (same every trial)
    against 1 random image per (identity, camera) of the other modality, drawn by ``sampling`` (module
    docstring).

    ``visible``/``ir`` must hold only samples of that modality. Sets are named ``llcm-<direction>`` with
    protocol ``"llcm"`` and ``trial`` ``first_trial`` .. ``first_trial + trials - 1``.
    """
    query_modality, _ = _choice(direction, DIRECTIONS, "llcm direction")
    numbers = _trial_numbers(trials, first_trial, seed, sampling)
    queries, candidates = _split_direction(visible, ir, query_modality, f"llcm ({direction})")
    name = f"llcm-{direction}"
    return [
        EvalSet(name, "llcm", list(queries), sample_gallery(candidates, 1, t, sampling, seed), trial=t)
        for t in numbers
    ]


def sample_gallery(
    candidates: Sequence[Sample], per_group: int, trial: int, sampling: str = "seeded", seed: int = 0
) -> list[Sample]:
    """The gallery of one trial: up to ``per_group`` of the ``candidates`` of every (identity, camera)
    group, drawn by ``sampling`` (``"standard"`` or ``"seeded"``, see the module docstring; ``seed`` is
    used by ``"seeded"`` only). Groups in the order they are drawn (module docstring), images in ``rel``
    order."""
    _choice(sampling, dict.fromkeys(SAMPLINGS), "gallery sampling")
    _check_count(per_group, "per_group", 1)
    _check_count(trial, "trial", 0)
    _check_count(seed, "seed", 0)
    groups: dict[tuple[int, int], list[Sample]] = defaultdict(list)
    for s in candidates:
        groups[(s.pid, s.cam)].append(s)
    standard = sampling == "standard"
    draw = _standard_draw(trial) if standard else _seeded_draw(seed, trial)
    order = _standard_order if standard else None
    chosen: list[Sample] = []
    for key in sorted(groups, key=order):
        members = sorted(groups[key], key=lambda s: (s.rel, s.path))
        chosen.extend(members[i] for i in sorted(draw(len(members), min(per_group, len(members)))))
    return chosen


def evaluate_sets(
    eval_sets: Sequence[EvalSet],
    embed_query: Embedder,
    embed_gallery: Embedder | None = None,
    distance: str = "cosine",
    max_rank: int = 20,
    rerank: Rerank | None = None,
) -> TrialSummary:
    """Evaluate every trial of one evaluation and return the mean and std of each metric over trials.

    ``embed_query`` gives the query features: either a callable that maps a list of samples to a
    ``(len(samples), dim)`` array, or a mapping from each sample to its feature row. ``embed_gallery``
    does the same for gallery samples (default: ``embed_query``). Each is called once, on the distinct
    samples all trials need in that role. ``distance="cosine"`` ranks by ``1 - cosine similarity`` (rows
    are L2-normalised here, so features need not be); ``"euclidean"`` by the Euclidean distance of the
    features as given. The sets must share one name (trials of one evaluation). With ``rerank`` each
    trial's distances are k-reciprocal re-ranked (:mod:`tvifm.eval.rerank`; on unit rows for cosine).
    """
    _check_sets(eval_sets)
    _choice(distance, dict.fromkeys(DISTANCES), "distance")
    query_samples = _distinct(s for es in eval_sets for s in es.query)
    gallery_samples = _distinct(s for es in eval_sets for s in es.gallery)
    if embed_gallery is None:
        features = _features(embed_query, _distinct([*query_samples, *gallery_samples]), "embed_query")
        query_features = gallery_features = features
    else:
        query_features = _features(embed_query, query_samples, "embed_query")
        gallery_features = _features(embed_gallery, gallery_samples, "embed_gallery")
    results = [
        _evaluate_set(es, query_features, gallery_features, distance, max_rank, rerank) for es in eval_sets
    ]
    return mean_results(results)


def _choice(value: str, options: Mapping[str, Any], what: str) -> Any:
    if value not in options:
        valid = ", ".join(repr(k) for k in options)
        raise ConfigError(f"{what} must be one of {valid}, got {value!r}")
    return options[value]


def _check_count(value: int, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _select(
    samples: Sequence[Sample], modality: Modality, cams: tuple[int, ...], what: str, role: str
) -> list[Sample]:
    """The samples of ``modality`` from ``cams``; a :class:`DatasetError` when there are none."""
    chosen = [s for s in samples if s.modality == modality and s.cam in cams]
    if not chosen:
        cam_list = ", ".join(str(c) for c in cams)
        raise DatasetError(
            f"{what}: no {modality} {role} images from cameras {cam_list} "
            f"among {len(samples)} {role} candidates"
        )
    _check_unique(chosen, what, role)
    return chosen


def _split_direction(
    visible: Sequence[Sample], ir: Sequence[Sample], query_modality: Modality, what: str
) -> tuple[list[Sample], list[Sample]]:
    """(queries, gallery) for a direction, after checking each list holds only its modality."""
    lists: dict[Modality, list[Sample]] = {"visible": list(visible), "ir": list(ir)}
    for modality, samples in lists.items():
        wrong = [s for s in samples if s.modality != modality]
        if wrong:
            raise DatasetError(
                f"{what}: the {modality} list holds {len(wrong)} {wrong[0].modality} samples "
                f"(first: {wrong[0].path}); pass visible samples as `visible` and IR samples as `ir`"
            )
        if not samples:
            role = "query" if modality == query_modality else "gallery"
            raise DatasetError(f"{what}: no {modality} images, so the {role} side is empty")
        _check_unique(samples, what, modality)
    gallery_modality: Modality = "visible" if query_modality == "ir" else "ir"
    return lists[query_modality], lists[gallery_modality]


def _check_unique(samples: Sequence[Sample], what: str, role: str) -> None:
    seen: set[str] = set()
    for s in samples:
        if s.path in seen:
            raise DatasetError(f"{what}: {role} image listed more than once", path=s.path)
        seen.add(s.path)


def _trial_numbers(trials: int, first_trial: int, seed: int, sampling: str) -> range:
    """The trial numbers of a builder, after checking its sampling options."""
    _check_count(trials, "trials", 1)
    _check_count(first_trial, "first_trial", 0)
    _check_count(seed, "seed", 0)
    _choice(sampling, dict.fromkeys(SAMPLINGS), "gallery sampling")
    return range(first_trial, first_trial + trials)


Draw = Callable[[int, int], list[int]]
"""``draw(n, k)``: the indices of ``k`` of a group's ``n`` sorted members, without replacement."""


def _standard_draw(trial: int) -> Draw:
    """The standard code's draws: ``random.seed(trial)`` once per trial, then per group one
    ``random.choice`` (single-shot), or ``random.sample`` of ``k`` (multi-shot, which the standard code
    lacks; see docs/design.md), here on a private generator in the same state."""
    rng = random.Random(trial)

    def draw(n: int, k: int) -> list[int]:
        return [rng.choice(range(n))] if k == 1 else rng.sample(range(n), k)

    return draw


def _standard_order(key: tuple[int, int]) -> tuple[str, int]:
    """The standard code's group order: ``sorted()`` of the ``"%04d"`` id strings, cameras ascending."""
    return f"{key[0]:04d}", key[1]


def _seeded_draw(seed: int, trial: int) -> Draw:
    rng = np.random.default_rng([seed, trial])

    def draw(n: int, k: int) -> list[int]:
        return [int(i) for i in rng.choice(n, size=k, replace=False)]

    return draw


def _distinct(samples: Iterable[Sample]) -> list[Sample]:
    return list(dict.fromkeys(samples))


def _check_sets(eval_sets: Sequence[EvalSet]) -> None:
    if not eval_sets:
        raise EvaluationError("evaluate_sets needs at least one EvalSet, got none")
    names = sorted({es.name for es in eval_sets})
    if len(names) > 1:
        raise EvaluationError(f"evaluate_sets averages the trials of one evaluation; got sets {names}")
    for es in eval_sets:
        if not es.query or not es.gallery:
            side = "query" if not es.query else "gallery"
            raise EvaluationError(f"{es.name} trial {es.trial}: the {side} list is empty")


def _features(embed: Embedder, samples: list[Sample], what: str) -> dict[Sample, np.ndarray]:
    """Feature row of every sample, keyed by sample, from a callable or a mapping."""
    if isinstance(embed, Mapping):
        missing = [s for s in samples if s not in embed]
        if missing:
            first = missing[0].path
            raise EvaluationError(f"{what} has no feature for {len(missing)} samples, first {first}")
        rows = np.stack([np.asarray(embed[s]) for s in samples])
    else:
        rows = np.asarray(embed(samples))
    if rows.ndim != 2 or rows.shape[0] != len(samples) or rows.dtype.kind not in "fiu":
        raise EvaluationError(
            f"{what} must give a real (samples x dim) array with {len(samples)} rows, "
            f"got shape {rows.shape} dtype {rows.dtype}"
        )
    if not np.isfinite(rows).all():
        raise EvaluationError(f"{what} returned NaN or inf features")
    return dict(zip(samples, rows, strict=True))


def _evaluate_set(
    es: EvalSet,
    query_features: Mapping[Sample, np.ndarray],
    gallery_features: Mapping[Sample, np.ndarray],
    distance: str,
    max_rank: int,
    rerank: Rerank | None = None,
) -> RetrievalResult:
    queries = np.stack([query_features[s] for s in es.query])
    gallery = np.stack([gallery_features[s] for s in es.gallery])
    if queries.shape[1] != gallery.shape[1]:
        raise EvaluationError(
            f"query features have {queries.shape[1]} dims but gallery features {gallery.shape[1]}"
        )
    if rerank is None:
        distances = _distances(queries, gallery, distance, es.name)
    elif distance == "cosine":
        distances = rerank(_unit_rows(queries, es.name, "query"), _unit_rows(gallery, es.name, "gallery"))
    else:
        distances = rerank(queries, gallery)
    return evaluate(
        distances,
        [s.pid for s in es.query],
        [s.pid for s in es.gallery],
        [s.cam for s in es.query],
        [s.cam for s in es.gallery],
        es.protocol,
        max_rank,
    )


def _distances(queries: np.ndarray, gallery: np.ndarray, distance: str, name: str) -> np.ndarray:
    dtype = np.result_type(queries.dtype, gallery.dtype, np.float32)
    queries, gallery = queries.astype(dtype, copy=False), gallery.astype(dtype, copy=False)
    if distance == "euclidean":
        squared = (queries**2).sum(1)[:, None] + (gallery**2).sum(1)[None, :] - 2 * queries @ gallery.T
        return np.sqrt(np.maximum(squared, 0))
    return 1 - _unit_rows(queries, name, "query") @ _unit_rows(gallery, name, "gallery").T


def _unit_rows(features: np.ndarray, name: str, role: str) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    if not norms.all():
        raise EvaluationError(f"{name}: a {role} feature is all zeros, so its cosine distance is undefined")
    return features / norms
