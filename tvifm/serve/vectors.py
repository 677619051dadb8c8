"""Vector search of one gallery modality: exact, IVF or HNSW inner-product search (faiss) with metadata
filters applied before the top-k.

A :class:`Shard` keeps its items in *slots*: row ``s`` of a float32 ``(capacity, D)`` matrix, the item's
id, and its metadata in columns (the slots of each ``key = value`` and the time of each key holding a
number or an ISO-8601 date-time, :mod:`tvifm.serve.filters`). Adding appends slots; deleting or
replacing an item marks its slot dead (a tombstone). :meth:`Shard.maintain` re-packs the live slots when
a quarter of them are dead and (re)builds the approximate structure; it builds new objects and swaps
them in with one assignment, so searches may run while it works in another thread (writes may not).

Search (:meth:`Shard.search`) for ``k`` hits among the items a filter admits (``m`` of them):

- ``exact`` (``IndexSpec.kind``), or a modality with fewer than ``min_items`` items, or a filter admitting
  at most ``exact_subset_max`` items: exact inner products. Up to :data:`SMALL_BATCH` queries go through
  faiss's brute-force kernel (``knn_inner_product``; faster than a matrix product for one query), more
  through one BLAS matrix product and ``topk`` (faster for batches); a small admitted subset is gathered
  first, a large one is searched in place with an ``IDSelectorBitmap`` (faiss) or a score mask (BLAS).
- ``ivf`` (``IndexIVFFlat``, ``nlist`` lists trained by k-means with a fixed seed on the live rows in slot
  order, ``nprobe`` lists searched) and ``hnsw`` (``IndexHNSWFlat``, ``hnsw_m`` links, ``ef_search``):
  faiss search whose ``IDSelectorBitmap`` admits only live, matching slots, so filtering happens inside
  the index, before the top-k; it is widened by the inverse of the admitted share (more lists, a longer
  candidate list, up to :data:`MAX_WIDEN` times). A query for which the index finds fewer than
  ``min(k, m)`` admitted items (a selective filter outside the probed lists) is answered exactly
  instead, so a search returns ``k`` hits whenever ``k`` items match.

Labels inside faiss are slot numbers: HNSW numbers vectors in the order they are added, which is slot
order, and IVF is given them explicitly. Nothing of the approximate structure is stored: it is rebuilt
from the gallery's embeddings on load, in the stored order, deterministically for IVF.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from tvifm.config.schema import ServeConfig
from tvifm.errors import ConfigError, TvifmError
from tvifm.serve.filters import Equals, MetadataFilter, Window, to_seconds, value_key

IndexKind = Literal["exact", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("exact", "ivf", "hnsw")
SMALL_BATCH = 4  # up to this many queries: faiss's brute-force kernel; more: one matrix product
DEAD_FRACTION = 0.25  # re-pack when this share of the slots is dead
IVF_REGROW = 4  # retrain IVF when the modality has grown this many times since its training
IVF_POINTS_PER_LIST = 64  # k-means training sample per list (faiss subsamples with the fixed seed)
MAX_WIDEN = 16.0  # a filtered approximate search visits at most this many times more candidates
_SERVE = ServeConfig()  # the defaults of the serve.index_* settings


@dataclass(frozen=True)
class IndexSpec:
    """How a gallery modality is searched: the ``serve.index*`` settings (their defaults; meanings in
    :class:`~tvifm.config.schema.ServeConfig` and docs/serving.md "Scale: index types")."""

    kind: IndexKind = _SERVE.index
    nlist: int = _SERVE.index_nlist  # 0: 4 * sqrt(items), at most items / 39
    nprobe: int = _SERVE.index_nprobe
    hnsw_m: int = _SERVE.index_hnsw_m
    ef_construction: int = _SERVE.index_ef_construction
    ef_search: int = _SERVE.index_ef_search
    min_items: int = _SERVE.index_min_items
    exact_subset_max: int = _SERVE.index_exact_subset_max
    seed: int = _SERVE.index_seed

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ConfigError(
                f"serve.index={self.kind!r} is not an index type; valid: {', '.join(INDEX_KINDS)}"
            )


def faiss_module() -> Any:
    """The ``faiss`` module, or a :class:`TvifmError` saying how to install it."""
    try:
        import faiss
    except ImportError as err:
        raise TvifmError("gallery search needs faiss: pip install 'tvifm[serve]' (faiss-cpu)") from err
    return faiss


def set_threads(threads: int) -> None:
    """Threads of faiss (OpenMP) and torch for the gallery index's searches and builds."""
    faiss_module().omp_set_num_threads(threads)
    torch.set_num_threads(threads)


# --- exact search -------------------------------------------------------------------------------------
def brute_force(
    queries: np.ndarray, base: np.ndarray, k: int, admitted: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products ``(B, k)`` and rows of ``base`` (``-1`` past the admitted rows).

    ``admitted``: a boolean mask over ``base``'s rows, or None for all rows.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)  # no copy for the shard's own matrix
    if len(queries) <= SMALL_BATCH:
        faiss = faiss_module()
        scores = np.empty((len(queries), k), dtype=np.float32)
        rows = np.empty((len(queries), k), dtype=np.int64)
        bitmap = None if admitted is None else np.packbits(admitted, bitorder="little")
        selector = None if bitmap is None else faiss.IDSelectorBitmap(len(admitted), faiss.swig_ptr(bitmap))
        faiss.knn_inner_product(
            faiss.swig_ptr(queries), faiss.swig_ptr(base), base.shape[1],
            len(queries), len(base), k, faiss.swig_ptr(scores), faiss.swig_ptr(rows), selector,
        )  # fmt: skip
        return scores, rows
    products = torch.from_numpy(queries) @ torch.from_numpy(base).t()
    if admitted is not None:
        products.masked_fill_(~torch.from_numpy(admitted), -math.inf)
    top = torch.topk(products, k, dim=1)
    return top.values.numpy(), top.indices.numpy()


# --- the approximate structure ---------------------------------------------------------------------------
class _Ann:
    """A faiss IVF or HNSW index over slots ``0 .. size-1`` of a shard."""

    def __init__(self, spec: IndexSpec, index: Any, size: int) -> None:
        self.spec, self.index, self.size = spec, index, size
        self.trained_on = size

    @classmethod
    def build(cls, spec: IndexSpec, matrix: np.ndarray) -> _Ann:
        """The structure of ``spec.kind`` over every row of ``matrix`` (label = row)."""
        faiss = faiss_module()
        n, dim = matrix.shape
        if spec.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = spec.ef_construction
            index.add(matrix)
            return cls(spec, index, n)
        nlist = spec.nlist or int(4 * math.sqrt(n))
        nlist = max(1, min(nlist, n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = spec.seed
        index.cp.max_points_per_centroid = IVF_POINTS_PER_LIST
        index.train(matrix)
        index.add_with_ids(matrix, np.arange(n, dtype=np.int64))
        return cls(spec, index, n)

    def add(self, rows: np.ndarray, start: int) -> None:
        """Add the embeddings of slots ``start ..`` (which must follow the covered ones)."""
        assert start == self.size, "slots reach the approximate index in order"
        if self.spec.kind == "hnsw":
            self.index.add(rows)
        else:
            self.index.add_with_ids(rows, np.arange(start, start + len(rows), dtype=np.int64))
        self.size += len(rows)

    def search(
        self, queries: np.ndarray, k: int, admitted: np.ndarray | None, share: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` (scores, slots; ``-1`` where fewer were found) among admitted slots.

        ``share``: the fraction of the items the filter admits; the search widens by its inverse (more
        IVF lists, a longer HNSW candidate list, up to :data:`MAX_WIDEN` times) so that about as many
        admitted items are visited as without a filter.
        """
        faiss = faiss_module()
        widen = min(MAX_WIDEN, 1.0 / max(share, 1e-9))
        if self.spec.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = math.ceil(max(self.spec.ef_search, k) * widen)
        else:
            params = faiss.SearchParametersIVF()
            params.nprobe = min(self.index.nlist, math.ceil(self.spec.nprobe * widen))
        bitmap = None
        if admitted is not None:
            bitmap = np.packbits(admitted[: self.size], bitorder="little")
            params.sel = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
        scores, slots = self.index.search(np.ascontiguousarray(queries), k, params=params)
        return scores, slots


# --- the columns ----------------------------------------------------------------------------------------
class _Columns:
    """Slots of one modality: embeddings, ids, liveness, metadata columns and the approximate structure."""

    def __init__(self, dim: int, capacity: int = 0) -> None:
        self.matrix = np.empty((capacity, dim), dtype=np.float32)
        self.alive = np.zeros(capacity, dtype=bool)
        self.ids: list[str | None] = []
        self.slot: dict[str, int] = {}
        self.equal: dict[str, dict[tuple[str, Any], array]] = {}  # key -> value class -> slots
        self.times: dict[str, tuple[array, array]] = {}  # key -> (slots, seconds)
        self.dead = 0
        self.ann: _Ann | None = None

    @property
    def size(self) -> int:
        """Slots in use (live and dead)."""
        return len(self.ids)

    @property
    def live(self) -> int:
        """Live items."""
        return self.size - self.dead

    def append(self, ids: Sequence[str], rows: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        start, stop = self.size, self.size + len(ids)
        if stop > len(self.matrix):
            self._grow(max(stop, 2 * len(self.matrix), 1024))
        self.matrix[start:stop] = rows
        self.alive[start:stop] = True
        for offset, (item_id, meta) in enumerate(zip(ids, metadata, strict=True)):
            self._index_metadata(start + offset, meta)
            self.slot[item_id] = start + offset
        self.ids.extend(ids)
        if self.ann is not None:
            self.ann.add(self.matrix[start:stop], start)

    def _grow(self, capacity: int) -> None:
        matrix = np.empty((capacity, self.matrix.shape[1]), dtype=np.float32)
        matrix[: self.size] = self.matrix[: self.size]
        alive = np.zeros(capacity, dtype=bool)
        alive[: self.size] = self.alive[: self.size]
        self.matrix, self.alive = matrix, alive

    def _index_metadata(self, slot: int, metadata: Mapping[str, Any]) -> None:
        for key, value in metadata.items():
            cls = value_key(value)
            if cls is not None:
                self.equal.setdefault(key, {}).setdefault(cls, array("q")).append(slot)
            seconds = to_seconds(value)
            if seconds is not None:
                slots, values = self.times.setdefault(key, (array("q"), array("d")))
                slots.append(slot)
                values.append(seconds)

    def kill(self, item_id: str) -> None:
        slot = self.slot.pop(item_id)
        self.alive[slot] = False
        self.ids[slot] = None
        self.dead += 1

    def admitted(self, where: MetadataFilter | None) -> np.ndarray | None:
        """Mask of the live slots ``where`` admits; None when every slot is live and there is no filter."""
        if where is None:
            return self.alive[: self.size] if self.dead else None
        mask = self.alive[: self.size].copy()
        for condition in where.conditions:
            mask &= self._matching(condition)
        return mask

    def _matching(self, condition: Equals | Window) -> np.ndarray:
        mask = np.zeros(self.size, dtype=bool)
        if isinstance(condition, Equals):
            postings = self.equal.get(condition.key, {})
            for cls in condition.values:
                if cls in postings:
                    mask[np.frombuffer(postings[cls], dtype=np.int64)] = True
            return mask
        slots, values = self.times.get(condition.key, (array("q"), array("d")))
        seconds = np.frombuffer(values, dtype=np.float64)
        low, high = condition.low, condition.high
        inside = (seconds >= low) if condition.low_inclusive else (seconds > low)
        inside &= (seconds <= high) if condition.high_inclusive else (seconds < high)
        mask[np.frombuffer(slots, dtype=np.int64)[inside]] = True
        return mask

    def repacked(self) -> _Columns:
        """The live slots renumbered ``0 .. live-1`` in order (no approximate structure)."""
        keep = np.flatnonzero(self.alive[: self.size])
        new_slot = np.full(self.size, -1, dtype=np.int64)
        new_slot[keep] = np.arange(len(keep))
        out = _Columns(self.matrix.shape[1], max(len(keep), 1024))
        out.matrix[: len(keep)] = self.matrix[keep]
        out.alive[: len(keep)] = True
        out.ids = [self.ids[s] for s in keep.tolist()]
        out.slot = {item_id: i for i, item_id in enumerate(out.ids) if item_id is not None}
        for key, postings in self.equal.items():
            renumbered = {cls: _renumber(slots, new_slot) for cls, slots in postings.items()}
            kept = {cls: slots for cls, slots in renumbered.items() if len(slots)}
            if kept:
                out.equal[key] = kept
        for key, (slots, values) in self.times.items():
            old = np.frombuffer(slots, dtype=np.int64)
            live = new_slot[old] >= 0
            if live.any():
                out.times[key] = (
                    array("q", new_slot[old][live].tobytes()),
                    array("d", np.frombuffer(values, dtype=np.float64)[live].tobytes()),
                )
        return out


def _renumber(slots: array, new_slot: np.ndarray) -> array:
    mapped = new_slot[np.frombuffer(slots, dtype=np.int64)]
    return array("q", mapped[mapped >= 0].tobytes())


# --- the shard ------------------------------------------------------------------------------------------
class Shard:
    """The items of one gallery modality and their search (see the module docstring)."""

    def __init__(self, dim: int, spec: IndexSpec | None = None) -> None:
        self.dim, self.spec = dim, spec or IndexSpec()
        self.cols = _Columns(dim)

    def __len__(self) -> int:
        return self.cols.live

    @property
    def approximate(self) -> bool:
        """Whether searches currently go through the IVF/HNSW structure."""
        return self.cols.ann is not None

    def append(
        self, ids: Sequence[str], embeddings: np.ndarray, metadata: Sequence[Mapping[str, Any]]
    ) -> None:
        """Add items (ids must not be live already); an existing approximate structure takes them too."""
        self.cols.append(ids, np.asarray(embeddings, dtype=np.float32), metadata)

    def remove(self, item_id: str) -> None:
        """Remove a live item (its slot becomes dead until the next re-pack)."""
        self.cols.kill(item_id)

    def ids(self) -> list[str]:
        """Live ids in slot order."""
        return [i for i in self.cols.ids if i is not None]

    def rows(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every live item's id and embedding, in slot order."""
        cols = self.cols
        for slot, item_id in enumerate(cols.ids):
            if item_id is not None:
                yield item_id, cols.matrix[slot]

    def embedding(self, item_id: str) -> np.ndarray:
        """The embedding of a live item."""
        return self.cols.matrix[self.cols.slot[item_id]]

    def maintain(self) -> bool:
        """Re-pack when many slots are dead and (re)build the approximate structure when due; returns
        whether anything changed. Safe while searches run in another thread, not while items change."""
        cols, spec = self.cols, self.spec
        repack = cols.dead > 0 and cols.dead >= DEAD_FRACTION * cols.size
        wanted = spec.kind != "exact" and cols.live >= spec.min_items
        regrow = cols.ann is not None and spec.kind == "ivf" and cols.live >= IVF_REGROW * cols.ann.trained_on
        if not (repack or (wanted and (cols.ann is None or regrow))):
            return False
        new = cols.repacked() if cols.dead else cols  # a new structure covers live slots only
        ann = _Ann.build(spec, new.matrix[: new.size]) if wanted else None
        if new is cols:
            cols.ann = ann
        else:
            new.ann = ann
            self.cols = new  # one assignment: a search in flight keeps the columns it started with
        return True

    def search(
        self,
        queries: np.ndarray,
        k: int,
        where: MetadataFilter | None = None,
        min_score: float | None = None,
    ) -> list[list[tuple[str, float]]]:
        """The top-``k`` ``(id, score)`` of each query among the live items ``where`` admits, best first;
        hits scoring below ``min_score`` are dropped."""
        cols = self.cols
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        admitted = cols.admitted(where)
        count = cols.live if admitted is None else int(admitted.sum())
        k = min(k, count)
        if k == 0:
            return [[] for _ in queries]
        if cols.ann is not None and (where is None or count > self.spec.exact_subset_max):
            scores, slots = _approximate(cols, queries, k, admitted, count)
        else:
            scores, slots = _exact(cols, queries, k, admitted, count)
        floor = -math.inf if min_score is None else min_score
        return [
            [(cols.ids[s], float(v)) for v, s in zip(srow.tolist(), lrow.tolist(), strict=True) if v >= floor]
            for srow, lrow in zip(scores, slots, strict=True)
        ]


def _approximate(
    cols: _Columns, queries: np.ndarray, k: int, admitted: np.ndarray | None, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` through the IVF/HNSW structure; queries it finds fewer than ``k`` hits for are answered
    exactly."""
    assert cols.ann is not None
    scores, slots = cols.ann.search(queries, k, admitted, count / max(cols.live, 1))
    short = np.flatnonzero((slots < 0).any(axis=1))
    if len(short):
        scores[short], slots[short] = _exact(cols, queries[short], k, admitted, count)
    return scores, slots


def _exact(
    cols: _Columns, queries: np.ndarray, k: int, admitted: np.ndarray | None, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` over the admitted slots: gathered when few, in place otherwise."""
    base = cols.matrix[: cols.size]
    if admitted is not None and count <= cols.size // 8:
        keep = np.flatnonzero(admitted)
        scores, rows = brute_force(queries, base[keep], k)
        return scores, keep[rows]
    return brute_force(queries, base, k, admitted)
