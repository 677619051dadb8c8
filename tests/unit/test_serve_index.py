"""Gallery search by index type (exact, IVF, HNSW): filtered search equals the brute-force ranking
restricted to the matching items, time windows, ``min_score``, approximate recall on a clustered set, and
adds, deletes and filters after a reload of the persisted gallery."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tvifm.serve.filters import parse_filter
from tvifm.serve.gallery import EmbeddingIndex, PersistentGallery, Record
from tvifm.serve.vectors import SMALL_BATCH, IndexSpec, Shard, brute_force

DIM = 16
T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC).timestamp()
APPROX = {"min_items": 200, "exact_subset_max": 50, "nlist": 32, "nprobe": 8, "hnsw_m": 16}


def _clustered(n: int, seed: int, clusters: int = 40) -> np.ndarray:
    """Unit vectors around ``clusters`` centres (people seen several times, as in a re-ID gallery)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _metadata(i: int) -> dict[str, Any]:
    """Cameras 0-3, two sites, and a timestamp every minute stored as epoch seconds or ISO-8601 text."""
    seconds = T0 + 60 * i
    iso = dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()
    return {"camera": i % 4, "site": "gate" if i % 3 else "hall", "timestamp": seconds if i % 2 else iso}


def _gallery(n: int, seed: int = 0, spec: IndexSpec | None = None) -> tuple[EmbeddingIndex, np.ndarray]:
    emb = _clustered(n, seed)
    index = EmbeddingIndex(DIM, spec)
    records = [Record(f"r{i}", "visible", _metadata(i)) for i in range(n)]
    index.put(records, torch.from_numpy(emb), [("s", i) for i in range(n)])
    index.maintain()
    return index, emb


def _reference(
    emb: np.ndarray, metadata: list[dict[str, Any]], query: np.ndarray, where: dict | None, k: int
) -> list[tuple[str, float]]:
    """Brute force: every matching item scored, best first, the first ``k``."""
    f = parse_filter(where) if where is not None else None
    scores = emb @ query
    keep = [i for i in range(len(emb)) if f is None or f.matches(metadata[i])]
    keep.sort(key=lambda i: -scores[i])
    return [(f"r{i}", float(scores[i])) for i in keep[:k]]


FILTERS = [
    None,
    {"camera": 2},
    {"camera": [0, 3], "site": "gate"},
    {"timestamp": {"gte": T0 + 60 * 100, "lt": "2024-05-01T05:00:00Z"}},  # minutes 100..299
    {"timestamp": {"gt": "2024-05-01T02:00:00+00:00"}, "camera": [1]},
    {"site": "nowhere"},
]


@pytest.mark.parametrize("where", FILTERS, ids=str)
@pytest.mark.parametrize("batch", [1, SMALL_BATCH + 4])  # faiss's kernel and the matrix product
def test_exact_filtered_search_is_the_brute_force_ranking_of_the_matching_items(
    where: dict | None, batch: int
) -> None:
    index, emb = _gallery(600)
    metadata = [_metadata(i) for i in range(600)]
    queries = _clustered(batch, seed=9)
    f = parse_filter(where) if where is not None else None
    found = index.search(torch.from_numpy(queries), "visible", 25, where=f)
    for q, hits in zip(queries, found, strict=True):
        expected = _reference(emb, metadata, q, where, 25)
        assert [h.id for h in hits] == [i for i, _ in expected]
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-5)
        assert all(f is None or f.matches(h.metadata) for h in hits)


def test_exact_search_equals_the_matrix_product_ranking_it_replaces() -> None:
    index, emb = _gallery(500)
    queries = _clustered(12, seed=3)
    previous = torch.topk(torch.from_numpy(queries) @ torch.from_numpy(emb).t(), 10, dim=1)  # the old search
    for batch in (queries[:1], queries):
        found = index.search(torch.from_numpy(batch), "visible", 10)
        for hits, rows in zip(found, previous.indices[: len(batch)].tolist(), strict=True):
            assert [h.id for h in hits] == [f"r{r}" for r in rows]


def test_min_score_drops_the_hits_below_it() -> None:
    index, emb = _gallery(400)
    metadata = [_metadata(i) for i in range(400)]
    query = _clustered(1, seed=4)
    expected = _reference(emb, metadata, query[0], {"site": "gate"}, 50)
    threshold = expected[20][1]  # the 21st best score
    found = index.search(
        torch.from_numpy(query), "visible", 50, where=parse_filter({"site": "gate"}), min_score=threshold
    )
    assert [h.id for h in found[0]] == [i for i, s in expected if s >= threshold]
    assert len(found[0]) >= 21 and min(h.score for h in found[0]) >= threshold
    assert index.search(torch.from_numpy(query), "visible", 50, min_score=1.0)[0] == []


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall_on_a_clustered_set(kind: str) -> None:
    spec = IndexSpec(kind=kind, **APPROX)  # type: ignore[arg-type]
    index, emb = _gallery(3000, spec=spec)
    assert index.shards["visible"].approximate
    queries = _clustered(50, seed=11)
    exact = brute_force(queries, emb, 10)[1]
    found = index.search(torch.from_numpy(queries), "visible", 10)
    recall = np.mean(
        [
            len({h.id for h in hits} & {f"r{r}" for r in rows}) / 10
            for hits, rows in zip(found, exact, strict=True)
        ]
    )
    assert recall >= 0.9, recall


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
@pytest.mark.parametrize("where", FILTERS[1:], ids=str)
def test_approximate_filtered_search_returns_only_matches_and_top_k_whenever_k_match(
    kind: str, where: dict
) -> None:
    spec = IndexSpec(kind=kind, **{**APPROX, "exact_subset_max": 0})  # type: ignore[arg-type]
    index, emb = _gallery(3000, spec=spec)  # every filter goes through the index's selector
    metadata = [_metadata(i) for i in range(3000)]
    f = parse_filter(where)
    matching = sum(f.matches(m) for m in metadata)
    queries = _clustered(20, seed=12)
    found = index.search(torch.from_numpy(queries), "visible", 30, where=f)
    recalls = []
    for q, hits in zip(queries, found, strict=True):
        assert len(hits) == min(30, matching)
        assert all(f.matches(h.metadata) for h in hits)
        expected = {i for i, _ in _reference(emb, metadata, q, where, 30)}
        recalls.append(len({h.id for h in hits} & expected) / max(1, len(expected)))
    assert np.mean(recalls) >= 0.9 if matching else recalls == [0.0] * 20


def test_a_selective_filter_is_answered_exactly_even_with_an_approximate_index() -> None:
    spec = IndexSpec(kind="hnsw", **APPROX)  # type: ignore[arg-type]
    index, emb = _gallery(3000, spec=spec)
    metadata = [_metadata(i) for i in range(3000)]
    where = {"timestamp": {"gte": T0, "lt": T0 + 60 * 40}}  # 40 items <= exact_subset_max
    query = _clustered(1, seed=5)
    found = index.search(torch.from_numpy(query), "visible", 30, where=parse_filter(where))
    assert [h.id for h in found[0]] == [i for i, _ in _reference(emb, metadata, query[0], where, 30)]


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_adds_deletes_and_filters_after_reload(tmp_path: Path, kind: str) -> None:
    spec = IndexSpec(kind=kind, **APPROX)  # type: ignore[arg-type]
    uri = str(tmp_path / "g")
    g = PersistentGallery(uri, DIM, "m", index=spec)
    emb = _clustered(1200, seed=1)
    records = [Record(f"r{i}", "visible", _metadata(i)) for i in range(1200)]
    for start in range(0, 1200, 400):
        g.add(records[start : start + 400], torch.from_numpy(emb[start : start + 400]))
    deleted = {f"r{i}" for i in range(0, 1200, 3)}
    for item_id in sorted(deleted):
        g.delete(item_id)
    assert g.index.shards["visible"].approximate is (kind != "exact")
    assert len(g.index.shards["visible"].cols.ids) < 1200  # dead slots were re-packed
    again = PersistentGallery(uri, DIM, "m", index=spec)
    again.add(
        [Record("new", "visible", {"camera": 1, "site": "gate", "timestamp": T0})], torch.from_numpy(emb[:1])
    )
    again.delete("r1")
    live = [i for i in range(1200) if f"r{i}" not in deleted and i != 1]
    ids = [f"r{i}" for i in live] + ["new"]
    base = np.concatenate([emb[live], emb[:1]])
    metadata = [_metadata(i) for i in live] + [{"camera": 1, "site": "gate", "timestamp": T0}]
    queries = _clustered(20, seed=13)
    for where in (None, {"camera": 1}, {"timestamp": {"lte": "2024-05-01T06:00:00Z"}, "site": "gate"}):
        f = parse_filter(where) if where else None
        found = again.search(torch.from_numpy(queries), "visible", 10, where=f)
        keep = [j for j in range(len(ids)) if f is None or f.matches(metadata[j])]
        exact = brute_force(queries, base[keep], 10)[1]
        recall = []
        for hits, rows in zip(found, exact, strict=True):
            assert len(hits) == 10 and not {h.id for h in hits} & (deleted | {"r1"})
            assert all(f is None or f.matches(h.metadata) for h in hits)
            recall.append(len({h.id for h in hits} & {ids[keep[r]] for r in rows}) / 10)
        assert np.mean(recall) >= (1.0 if kind == "exact" else 0.9)
    assert again.search(torch.from_numpy(emb[:1]), "visible", 1)[0][0].id == "new"
    assert again.stats()["index"] == kind
    assert again.stats()["approximate"] == {"visible": kind != "exact", "ir": False}


def test_ivf_is_rebuilt_identically_on_load(tmp_path: Path) -> None:
    spec = IndexSpec(kind="ivf", **APPROX)  # type: ignore[arg-type]
    uri = str(tmp_path / "g")
    g = PersistentGallery(uri, DIM, "m", index=spec)
    g.add([Record(f"r{i}", "visible") for i in range(1000)], torch.from_numpy(_clustered(1000, seed=2)))
    queries = torch.from_numpy(_clustered(30, seed=14))
    first = PersistentGallery(uri, DIM, "m", index=spec).search(queries, "visible", 10)
    second = PersistentGallery(uri, DIM, "m", index=spec).search(queries, "visible", 10)
    assert [[h.id for h in hits] for hits in first] == [[h.id for h in hits] for hits in second]


def test_a_small_modality_is_searched_exactly_until_it_is_large_enough() -> None:
    shard = Shard(DIM, IndexSpec(kind="hnsw", min_items=300))
    emb = _clustered(400, seed=6)
    shard.append([f"r{i}" for i in range(250)], emb[:250], [{}] * 250)
    assert not shard.maintain() and not shard.approximate
    shard.append([f"r{i}" for i in range(250, 400)], emb[250:], [{}] * 150)
    assert shard.maintain() and shard.approximate
