"""k-reciprocal re-ranking against a direct transcription of the published algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from tvifm.eval.rerank import k_reciprocal_rerank


def _direct(query: np.ndarray, gallery: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """The reference loop, item by item, as the ReID toolkits write it."""
    q = len(query)
    feats = np.concatenate([query, gallery]).astype(np.float64)
    n = len(feats)
    dist = np.array([[np.sum((a - b) ** 2) for b in feats] for a in feats])
    dist = np.transpose(dist / np.max(dist, axis=0))
    rank = np.argsort(dist, axis=1, kind="stable")
    k1 = min(k1, n - 1)
    v = np.zeros((n, n))
    for i in range(n):
        forward = rank[i, : k1 + 1]
        backward = rank[forward, : k1 + 1]
        recip = forward[np.where(backward == i)[0]]
        expansion = recip
        for c in recip:
            h = int(np.around(k1 / 2)) + 1
            c_forward = rank[c, :h]
            c_backward = rank[c_forward, :h]
            c_recip = c_forward[np.where(c_backward == c)[0]]
            if len(np.intersect1d(c_recip, recip)) > 2 / 3 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        v[i, expansion] = weight / np.sum(weight)
    if k2 != 1:
        k2 = min(k2, n)
        v = np.array([np.mean(v[rank[i, :k2], :], axis=0) for i in range(n)])
    jaccard = np.zeros((q, n))
    for i in range(q):
        shared = np.zeros(n)
        for k in np.where(v[i] != 0)[0]:
            others = np.where(v[:, k] != 0)[0]
            shared[others] += np.minimum(v[i, k], v[others, k])
        jaccard[i] = 1 - shared / (2 - shared)
    return (jaccard * (1 - lam) + dist[:q] * lam)[:, q:]


def _unit(rng: np.random.Generator, n: int, d: int, ids: int) -> np.ndarray:
    centres = rng.normal(size=(ids, d))
    x = centres[rng.integers(0, ids, size=n)] + 0.7 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
    ("q", "g", "k1", "k2", "lam"),
    [(7, 30, 5, 3, 0.3), (12, 40, 20, 6, 0.3), (1, 25, 8, 1, 0.5), (3, 6, 20, 6, 0.3), (20, 20, 4, 4, 0.0)],
)
def test_equals_the_direct_algorithm(q: int, g: int, k1: int, k2: int, lam: float) -> None:
    rng = np.random.default_rng(q * 100 + g)
    query, gallery = _unit(rng, q, 16, 6), _unit(rng, g, 16, 6)
    got = k_reciprocal_rerank(query, gallery, k1=k1, k2=k2, lambda_value=lam)
    assert got.shape == (q, g)
    np.testing.assert_allclose(got, _direct(query, gallery, k1, k2, lam), atol=2e-4)


def test_reranking_changes_the_order_towards_shared_neighbourhoods() -> None:
    rng = np.random.default_rng(0)
    query, gallery = _unit(rng, 10, 16, 4), _unit(rng, 60, 16, 4)
    plain = 2 - 2 * query @ gallery.T
    reranked = k_reciprocal_rerank(query, gallery)
    assert not np.array_equal(np.argsort(plain, axis=1), np.argsort(reranked, axis=1))


@pytest.mark.parametrize(
    ("query", "gallery", "kwargs", "message"),
    [
        (np.zeros((2, 4)), np.zeros((3, 5)), {}, "one dimension"),
        (np.zeros((0, 4)), np.zeros((3, 4)), {}, "at least one"),
        (np.ones((2, 4)), np.ones((3, 4)), {"k1": 0}, "k1 >= 1"),
        (np.ones((2, 4)), np.ones((3, 4)), {"lambda_value": 1.5}, "lambda"),
    ],
)
def test_bad_input_is_refused(query: np.ndarray, gallery: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(Exception, match=message):
        k_reciprocal_rerank(query, gallery, **kwargs)


def test_evaluation_with_reranking_scores_the_reranked_distances() -> None:
    from tvifm.data.base import Sample
    from tvifm.eval.metrics import evaluate
    from tvifm.eval.protocols import evaluate_sets, regdb_eval_sets
    from tvifm.eval.rerank import Rerank

    rng = np.random.default_rng(5)
    pids = np.repeat(np.arange(8), 3)
    centres = rng.normal(size=(8, 16))

    def samples(modality: str) -> list[Sample]:
        return [
            Sample(
                f"/d/{modality}/{i}", f"{modality}/{i}", int(p), 1 if modality == "visible" else 2, modality
            )
            for i, p in enumerate(pids)
        ]

    visible, ir = samples("visible"), samples("ir")
    features = {s: (centres[s.pid] + 0.9 * rng.normal(size=16)).astype(np.float32) for s in [*visible, *ir]}
    (es,) = regdb_eval_sets(visible, ir, "ir2rgb")
    rerank = Rerank(k1=6, k2=3, lambda_value=0.3)
    got = evaluate_sets([es], features, rerank=rerank)
    unit = {s: f / np.linalg.norm(f) for s, f in features.items()}
    q = np.stack([unit[s] for s in es.query])
    g = np.stack([unit[s] for s in es.gallery])
    expected = evaluate(
        _direct(q, g, 6, 3, 0.3),
        [s.pid for s in es.query],
        [s.pid for s in es.gallery],
        [s.cam for s in es.query],
        [s.cam for s in es.gallery],
        es.protocol,
        20,
    )
    np.testing.assert_allclose(got.cmc, expected.cmc, atol=1e-6)
    assert abs(got.mAP - expected.mAP) < 1e-4
    plain = evaluate_sets([es], features)
    assert not np.allclose(plain.cmc, got.cmc) or abs(plain.mAP - got.mAP) > 1e-6
