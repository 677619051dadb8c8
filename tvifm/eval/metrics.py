"""Retrieval metrics for VI-ReID: CMC, mAP and mINP under the SYSU-MM01, RegDB and LLCM protocols.

Every query ranks the gallery by ascending distance. Equal distances are ordered by gallery index (the
lower index ranks first), so the ranking is exactly that of a stable argsort of each distance row.

A protocol first removes *ignored* gallery items from a query's ranking:

* ``"sysu"``: a query from camera 3 ignores gallery images from camera 2 (same room, SYSU-MM01 rule);
* ``"llcm"``: a query ignores gallery images of its own identity taken by its own camera;
* ``"regdb"``: nothing is ignored.

On the remaining (*kept*) ranking a *true match* is a gallery item with the query's identity, and

* **CMC** uses the rank of the query's identity. For ``"sysu"`` and ``"llcm"`` the ranking is first
  deduplicated by identity (each identity counts once, at its best kept item), so the rank is one plus the
  number of other identities whose best kept item comes before the first true match. For ``"regdb"`` it is
  the plain rank of the first true match. ``cmc[k - 1]`` is the fraction of queries whose rank is at most
  ``k``. When the ranking is shorter than ``max_rank`` the curve is padded with its last value, which is
  1.0 because every evaluated query finds its identity somewhere in the ranking.
* **AP** is the mean, over the true matches, of the precision at each true match's rank in the kept
  (not deduplicated) ranking.
* **INP** is ``number of true matches / rank of the hardest (last) true match``.

Queries without any true match in their kept ranking are left out of every average; their number is
``num_queries - num_valid_queries``.

The implementation is vectorised over blocks of queries: one value sort per row, then a binary search
for the rank of each true match and per-identity minima (``np.minimum.reduceat``) for the deduplicated
rank. Ties are resolved exactly by gallery index in both float32 and float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tvifm.errors import TvifmError

PROTOCOLS: tuple[str, ...] = ("sysu", "regdb", "llcm")
DEDUP_PROTOCOLS = frozenset({"sysu", "llcm"})
SYSU_SHADOWED = (3, 2)  # (query camera, gallery camera it ignores)
REPORTED_RANKS = (1, 5, 10, 20)
_BLOCK_ELEMENTS = 1 << 18  # distance entries processed at once (bounds memory, keeps blocks in cache)
_TIE_BLOCK_ROWS = 256


class EvaluationError(TvifmError):
    """The inputs of an evaluation are malformed or cannot produce a result."""


@dataclass(frozen=True, eq=False)
class RetrievalResult:
    """Metrics of one evaluation (one trial); fractions in [0, 1].

    ``cmc[k - 1]`` is Rank-k. ``num_valid_queries`` counts the queries that have at least one true
    match, the only ones averaged; ``num_queries`` counts all queries.
    """

    cmc: np.ndarray
    mAP: float  # noqa: N815 - the metric's conventional name
    mINP: float  # noqa: N815 - the metric's conventional name
    num_valid_queries: int
    num_queries: int

    def rank(self, k: int) -> float:
        """Rank-``k`` accuracy (1-based ``k`` up to ``len(cmc)``)."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= len(self.cmc):
            raise EvaluationError(f"rank k must be an integer from 1 to {len(self.cmc)}, got {k!r}")
        return float(self.cmc[k - 1])

    def to_dict(self) -> dict[str, float]:
        """``rank1, rank5, rank10, rank20`` (those within ``len(cmc)``), ``mAP`` and ``mINP`` as floats."""
        out = {f"rank{k}": self.rank(k) for k in REPORTED_RANKS if k <= len(self.cmc)}
        out["mAP"] = float(self.mAP)
        out["mINP"] = float(self.mINP)
        return out


@dataclass(frozen=True, eq=False)
class TrialSummary:
    """Mean and population standard deviation (0 for one trial) of each metric over evaluation trials."""

    cmc: np.ndarray
    cmc_std: np.ndarray
    mAP: float  # noqa: N815 - the metric's conventional name
    mAP_std: float  # noqa: N815
    mINP: float  # noqa: N815
    mINP_std: float  # noqa: N815
    trials: tuple[RetrievalResult, ...]

    def to_dict(self) -> dict[str, float]:
        """Mean ``rank1, rank5, rank10, rank20`` (within ``len(cmc)``), ``mAP``, ``mINP``, each also as
        ``<name>_std``, plus ``trials`` (the number of trials)."""
        out: dict[str, float] = {}
        for k in REPORTED_RANKS:
            if k <= len(self.cmc):
                out[f"rank{k}"] = float(self.cmc[k - 1])
                out[f"rank{k}_std"] = float(self.cmc_std[k - 1])
        out.update(mAP=self.mAP, mAP_std=self.mAP_std, mINP=self.mINP, mINP_std=self.mINP_std)
        out["trials"] = float(len(self.trials))
        return out


def mean_results(results: Sequence[RetrievalResult]) -> TrialSummary:
    """Average per-trial results (all with the same CMC length); each trial weighs the same."""
    trials = tuple(results)
    if not trials:
        raise EvaluationError("mean_results needs at least one RetrievalResult, got none")
    lengths = sorted({len(r.cmc) for r in trials})
    if len(lengths) > 1:
        raise EvaluationError(f"results to average must share one CMC length (max_rank), got {lengths}")
    cmc = np.stack([r.cmc for r in trials])
    m_ap = np.array([r.mAP for r in trials])
    m_inp = np.array([r.mINP for r in trials])
    return TrialSummary(
        cmc=_frozen(cmc.mean(axis=0)),
        cmc_std=_frozen(cmc.std(axis=0)),
        mAP=float(m_ap.mean()),
        mAP_std=float(m_ap.std()),
        mINP=float(m_inp.mean()),
        mINP_std=float(m_inp.std()),
        trials=trials,
    )


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class _Gallery:
    """Gallery labels in working column order: grouped by identity, original order within an identity."""

    pids: np.ndarray
    cams: np.ndarray
    index: np.ndarray  # original gallery index of each working column
    perm: np.ndarray | None  # working column -> original column; None when the order is unchanged
    ids: np.ndarray  # sorted distinct identities
    starts: np.ndarray  # first working column of each identity
    stops: np.ndarray  # one past the last working column of each identity


@dataclass(frozen=True)
class _Matches:
    """The true matches of one block of queries, summarised per query that has any."""

    rows: np.ndarray  # block rows of the queries with at least one kept true match
    first_rank: np.ndarray  # rank of the first true match in the kept ranking
    first_value: np.ndarray  # its distance
    first_index: np.ndarray  # its original gallery index
    ap: np.ndarray
    inp: np.ndarray


@dataclass(frozen=True)
class _BlockStats:
    """Per valid query of one block: CMC rank, AP and INP."""

    ranks: np.ndarray
    ap: np.ndarray
    inp: np.ndarray


def evaluate(
    distmat: Any,
    query_pids: Any,
    gallery_pids: Any,
    query_cams: Any,
    gallery_cams: Any,
    protocol: str,
    max_rank: int = 20,
) -> RetrievalResult:
    """Evaluate a query x gallery distance matrix (smaller = more similar) under ``protocol``.

    ``distmat`` is ``(num_queries, num_gallery)``; the label arrays are 1-D integer arrays of matching
    lengths. ``protocol`` is one of ``"sysu"``, ``"regdb"``, ``"llcm"``; the module docstring details what
    each ignores and how CMC, AP and INP are computed. Equal distances rank by ascending gallery index
    (the order of a stable sort). The CMC has ``max_rank`` entries; past the end of a shorter ranking it
    is padded with its last value. Queries without a true match are excluded from every average
    (``num_valid_queries``). Integer distances are evaluated as float64, float16 as float32.

    Raises :class:`EvaluationError` on malformed input (shapes, non-finite distances, unknown protocol,
    ``max_rank < 1``) or when no query has a true match.
    """
    _check_protocol(protocol)
    _check_max_rank(max_rank)
    dist = _as_distances(distmat)
    n_query, n_gallery = dist.shape
    q_pids = _as_labels(query_pids, "query_pids", n_query, "rows (queries)")
    q_cams = _as_labels(query_cams, "query_cams", n_query, "rows (queries)")
    g_pids = _as_labels(gallery_pids, "gallery_pids", n_gallery, "columns (gallery items)")
    g_cams = _as_labels(gallery_cams, "gallery_cams", n_gallery, "columns (gallery items)")
    gallery = _prepare_gallery(g_pids, g_cams)
    stats = [
        _block_stats(dist[lo:hi], q_pids[lo:hi], q_cams[lo:hi], gallery, protocol, lo)
        for lo, hi in _blocks(n_query, n_gallery)
    ]
    return _summarise(stats, n_query, max_rank, protocol)


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r}; valid protocols are {', '.join(PROTOCOLS)}")


def _check_max_rank(max_rank: int) -> None:
    if isinstance(max_rank, bool) or not isinstance(max_rank, int | np.integer) or max_rank < 1:
        raise EvaluationError(f"max_rank must be an integer >= 1, got {max_rank!r}")


def _as_distances(distmat: Any) -> np.ndarray:
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise EvaluationError(f"distmat must be a 2-D (queries x gallery) array, got shape {dist.shape}")
    if dist.dtype.kind in "iu":
        dist = dist.astype(np.float64)
    elif dist.dtype.kind != "f":
        raise EvaluationError(f"distmat must hold real numbers (float or int), got dtype {dist.dtype}")
    elif dist.dtype.itemsize < 4:
        dist = dist.astype(np.float32)
    if 0 in dist.shape:
        raise EvaluationError(f"distmat needs at least one query and one gallery item, got {dist.shape}")
    return dist


def _as_labels(values: Any, name: str, length: int, axis: str) -> np.ndarray:
    labels = np.asarray(values)
    if labels.ndim != 1:
        raise EvaluationError(f"{name} must be a 1-D array, got shape {labels.shape}")
    if labels.shape[0] != length:
        raise EvaluationError(f"{name} has {labels.shape[0]} entries but distmat has {length} {axis}")
    if labels.dtype.kind not in "iu":
        raise EvaluationError(f"{name} must hold integers, got dtype {labels.dtype}")
    return labels.astype(np.int64, copy=False)


def _prepare_gallery(pids: np.ndarray, cams: np.ndarray) -> _Gallery:
    perm = np.argsort(pids, kind="stable")
    index = np.arange(len(pids))
    in_order = bool(np.all(perm == index))
    work_pids = pids if in_order else pids[perm]
    starts = np.flatnonzero(np.r_[True, work_pids[1:] != work_pids[:-1]])
    stops = np.r_[starts[1:], len(pids)]
    if in_order:
        return _Gallery(pids, cams, index, None, pids[starts], starts, stops)
    return _Gallery(work_pids, cams[perm], perm, perm, work_pids[starts], starts, stops)


def _blocks(n_query: int, n_gallery: int) -> list[tuple[int, int]]:
    rows = max(1, _BLOCK_ELEMENTS // n_gallery)
    return [(lo, min(lo + rows, n_query)) for lo in range(0, n_query, rows)]


def _block_stats(
    dist: np.ndarray, q_pids: np.ndarray, q_cams: np.ndarray, gallery: _Gallery, protocol: str, offset: int
) -> _BlockStats:
    dist = np.ascontiguousarray(dist)
    _check_finite(dist, offset)
    own = _identity_index(q_pids, gallery)
    rows, cols, ignored = _identity_pairs(own, q_cams, gallery, protocol)
    work = _kept_distances(dist, q_cams, gallery, protocol, rows[ignored], cols[ignored])
    matches = _rank_matches(work, rows[~ignored], cols[~ignored], gallery)
    if protocol in DEDUP_PROTOCOLS:
        cmc_ranks = _identity_ranks(work, matches, own[matches.rows], gallery)
    else:
        cmc_ranks = matches.first_rank
    return _BlockStats(cmc_ranks, matches.ap, matches.inp)


def _check_finite(dist: np.ndarray, offset: int) -> None:
    bad = ~np.isfinite(dist)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise EvaluationError(
            f"distmat must be finite; found {int(bad.sum())} NaN/inf entries in rows {offset}.."
            f"{offset + dist.shape[0] - 1}, first at [{offset + row}, {col}]"
        )


def _identity_index(q_pids: np.ndarray, gallery: _Gallery) -> np.ndarray:
    """Index of each query identity in ``gallery.ids``, or -1 when the gallery lacks it."""
    found = np.minimum(np.searchsorted(gallery.ids, q_pids), len(gallery.ids) - 1)
    return np.where(gallery.ids[found] == q_pids, found, -1)


def _identity_pairs(
    own: np.ndarray, q_cams: np.ndarray, gallery: _Gallery, protocol: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query row, working column) pair of the same identity, row-major, and which are ignored."""
    present = own >= 0
    safe = np.where(present, own, 0)
    lengths = np.where(present, gallery.stops[safe] - gallery.starts[safe], 0)
    rows = np.repeat(np.arange(len(own)), lengths)
    shift = np.repeat(gallery.starts[safe] - (np.cumsum(lengths) - lengths), lengths)
    cols = np.arange(len(rows)) + shift
    if protocol == "sysu":
        query_cam, gallery_cam = SYSU_SHADOWED
        ignored = (q_cams[rows] == query_cam) & (gallery.cams[cols] == gallery_cam)
    elif protocol == "llcm":
        ignored = q_cams[rows] == gallery.cams[cols]
    else:
        ignored = np.zeros(len(rows), dtype=bool)
    return rows, cols, ignored


def _kept_distances(
    dist: np.ndarray,
    q_cams: np.ndarray,
    gallery: _Gallery,
    protocol: str,
    ignored_rows: np.ndarray,
    ignored_cols: np.ndarray,
) -> np.ndarray:
    """Distances in working column order with every ignored item set to +inf (never the input itself)."""
    if protocol == "regdb":
        return dist if gallery.perm is None else np.take(dist, gallery.perm, axis=1)
    work = dist.copy() if gallery.perm is None else np.take(dist, gallery.perm, axis=1)
    if protocol == "sysu":
        query_cam, gallery_cam = SYSU_SHADOWED
        shadowed = np.flatnonzero(q_cams == query_cam)
        penalty = np.where(gallery.cams == gallery_cam, np.inf, 0.0).astype(work.dtype)
        work[shadowed] += penalty
    else:
        work[ignored_rows, ignored_cols] = np.inf
    return work


def _rank_matches(work: np.ndarray, rows: np.ndarray, cols: np.ndarray, gallery: _Gallery) -> _Matches:
    """Rank every kept true match (row-major ``rows``, ``cols``) and derive AP and INP per query."""
    values = work[rows, cols]
    ranks = _match_ranks(work, rows, gallery.index[cols], values, gallery.index)
    order = np.argsort(rows * (work.shape[1] + 1) + ranks, kind="stable")  # by row, then by rank
    ranks, cols, values = ranks[order], cols[order], values[order]
    n_pos = np.bincount(rows, minlength=work.shape[0])
    start = np.cumsum(n_pos) - n_pos
    nth = np.arange(len(rows)) - start[rows] + 1  # 1-based position of a match among its row's matches
    ap_sum = np.bincount(rows, weights=nth / ranks, minlength=work.shape[0])
    valid = np.flatnonzero(n_pos)
    first, count = start[valid], n_pos[valid]
    return _Matches(
        rows=valid,
        first_rank=ranks[first],
        first_value=values[first],
        first_index=gallery.index[cols[first]],
        ap=ap_sum[valid] / count,
        inp=count / ranks[first + count - 1],
    )


def _match_ranks(
    work: np.ndarray, rows: np.ndarray, positions: np.ndarray, values: np.ndarray, index: np.ndarray
) -> np.ndarray:
    """1-based rank of each true match among the kept items of its row (ties by gallery index).

    ``positions`` are the matches' original gallery indices, ``index`` that of every working column.
    """
    ordered = np.sort(work, axis=1)
    width = ordered.shape[1]
    below = _count_below(ordered, rows, values)
    # ordered[row, below] is the match's own value; an equal successor means a tie to resolve exactly
    successor = ordered[rows, np.minimum(below + 1, width - 1)]
    tied = np.flatnonzero((below + 1 < width) & (successor == values))
    if tied.size:
        below[tied] += _equal_earlier(work, rows[tied], positions[tied], values[tied], index)
    return below + 1


def _count_below(ordered: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per needle, how many entries of its sorted row are smaller than its value (vectorised search)."""
    width = ordered.shape[1]
    flat = ordered.ravel()
    base = rows * width - 1
    count = np.zeros(len(rows), dtype=np.int64)
    step = 1 << (width.bit_length() - 1)
    while step:
        candidate = count + step
        probe = flat[base + np.minimum(candidate, width)]
        count = np.where((probe < values) & (candidate <= width), candidate, count)
        step >>= 1
    return count


def _equal_earlier(
    work: np.ndarray, rows: np.ndarray, before: np.ndarray, values: np.ndarray, index: np.ndarray
) -> np.ndarray:
    """Per needle, the number of entries of its row equal to its value with a smaller gallery index."""
    out = np.empty(len(rows), dtype=np.int64)
    for lo in range(0, len(rows), _TIE_BLOCK_ROWS):
        part = slice(lo, lo + _TIE_BLOCK_ROWS)
        hits = (work[rows[part]] == values[part, None]) & (index[None, :] < before[part, None])
        out[part] = hits.sum(axis=1)
    return out


def _identity_ranks(work: np.ndarray, matches: _Matches, own: np.ndarray, gallery: _Gallery) -> np.ndarray:
    """1-based rank of each query's identity (index ``own``) in its identity-deduplicated kept ranking."""
    value, index = matches.first_value[:, None], matches.first_index[:, None]
    best = np.minimum.reduceat(work, gallery.starts, axis=1)[matches.rows]
    ahead = np.count_nonzero(best < value, axis=1)
    level = best == value
    level[np.arange(len(own)), own] = False
    tied = np.flatnonzero(level.any(axis=1))
    if tied.size:  # identities whose best distance equals the first match's: earlier gallery index wins
        earlier = (work[matches.rows[tied]] == value[tied]) & (gallery.index[None, :] < index[tied])
        reached = np.logical_or.reduceat(earlier, gallery.starts, axis=1)
        ahead[tied] += np.count_nonzero(reached & level[tied], axis=1)
    return ahead + 1


def _summarise(stats: list[_BlockStats], n_query: int, max_rank: int, protocol: str) -> RetrievalResult:
    ranks = np.concatenate([s.ranks for s in stats])
    if ranks.size == 0:
        raise EvaluationError(
            f"no query has a true match in its gallery under protocol {protocol!r} ({n_query} queries); "
            "check that query and gallery identities overlap"
        )
    capped = np.minimum(ranks, max_rank + 1) - 1
    cmc = _frozen(np.cumsum(np.bincount(capped, minlength=max_rank + 1)[:max_rank]) / ranks.size)
    ap = np.concatenate([s.ap for s in stats])
    inp = np.concatenate([s.inp for s in stats])
    return RetrievalResult(cmc, float(np.mean(ap)), float(np.mean(inp)), int(ranks.size), n_query)
