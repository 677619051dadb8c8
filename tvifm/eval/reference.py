"""A deliberately plain per-query evaluation loop: the reference :func:`tvifm.eval.evaluate` is checked
against.

It follows the structure of the evaluation code commonly shipped with VI-ReID papers (one argsort of the
whole matrix, then per query: a keep mask, ``np.unique`` for the identity-deduplicated CMC, cumulative
sums, and AP through a Python comprehension over the ranking), with a stable argsort so ties are ordered
by gallery index. Used by ``benchmarks/bench_eval.py`` (timing) and ``tests/unit/test_eval_metrics.py``
(equality on random inputs); too slow for anything else.
"""

from __future__ import annotations

import numpy as np


def naive_evaluate(
    distmat: np.ndarray,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    query_cams: np.ndarray,
    gallery_cams: np.ndarray,
    protocol: str,
    max_rank: int = 20,
) -> tuple[np.ndarray, float, float, int]:
    """Return ``(cmc, mAP, mINP, num_valid_queries)`` computed one query at a time."""
    order = np.argsort(distmat, axis=1, kind="stable")
    curves, aps, inps = [], [], []
    for q in range(distmat.shape[0]):
        labels = gallery_pids[order[q]]
        cams = gallery_cams[order[q]]
        if protocol == "sysu":
            keep = ~((query_cams[q] == 3) & (cams == 2))
        elif protocol == "llcm":
            keep = ~((labels == query_pids[q]) & (cams == query_cams[q]))
        else:
            keep = np.ones(len(labels), dtype=bool)
        labels = labels[keep]
        matches = (labels == query_pids[q]).astype(np.int32)
        if not matches.any():
            continue
        curves.append(_cmc_row(labels, matches, query_pids[q], protocol != "regdb", max_rank))
        hits = matches.cumsum()
        last = np.flatnonzero(matches)[-1]
        inps.append(hits[last] / (last + 1.0))
        precision = np.asarray([h / (i + 1.0) for i, h in enumerate(hits)]) * matches
        aps.append(precision.sum() / matches.sum())
    if not curves:
        raise ValueError("no valid query")
    return np.mean(curves, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(curves)


def _cmc_row(labels: np.ndarray, matches: np.ndarray, pid: int, dedup: bool, max_rank: int) -> np.ndarray:
    """One query's CMC row up to ``max_rank`` (identity-deduplicated when ``dedup``)."""
    if dedup:
        first = np.sort(np.unique(labels, return_index=True)[1])
        row = (labels[first] == pid).astype(np.int32).cumsum()
    else:
        row = np.minimum(matches.cumsum(), 1)
    row = row[:max_rank]
    if len(row) < max_rank:
        row = np.concatenate([row, np.full(max_rank - len(row), row[-1])])
    return row
