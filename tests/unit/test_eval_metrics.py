"""tvifm.eval.offline: hand-worked protocol cases, equality with a per-query loop, properties, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvifm.errors import TvifmError
from tvifm.eval import EvaluationError, RetrievalResult, evaluate, mean_results
from tvifm.eval import metrics as metrics_module
from tvifm.eval.reference import naive_evaluate


def _eval(
    dist: list[list[float]],
    qp: list[int],
    gp: list[int],
    qc: list[int],
    gc: list[int],
    protocol: str,
    max_rank: int = 20,
) -> RetrievalResult:
    """evaluate() on plain lists (query pids/cams, gallery pids/cams)."""
    return evaluate(np.array(dist), qp, gp, qc, gc, protocol, max_rank)


# --- hand-worked cases -------------------------------------------------------------------------------

# Gallery shared by the SYSU cases: index: (pid, cam, distance to the query)
#   0: (2, cam 2, 0.1)  1: (3, cam 1, 0.2)  2: (3, cam 4, 0.3)  3: (1, cam 1, 0.4)
#   4: (2, cam 5, 0.5)  5: (1, cam 2, 0.6)  6: (1, cam 4, 0.7)
SYSU_G_PIDS = [2, 3, 3, 1, 2, 1, 1]
SYSU_G_CAMS = [2, 1, 4, 1, 5, 2, 4]
SYSU_ROW = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]


def test_sysu_cam3_query_ignores_cam2_gallery_and_dedups_identities() -> None:
    # cam-3 query of pid 1: items 0 and 5 (cam 2) are ignored -> kept ranking 1(p3) 2(p3) 3(p1) 4(p2) 6(p1)
    # identity-deduplicated: p3, p1, p2 -> rank 2.  True matches at kept ranks 3 and 5:
    # AP = (1/3 + 2/5) / 2 = 11/30, INP = 2/5.
    r = _eval([SYSU_ROW], [1], SYSU_G_PIDS, [3], SYSU_G_CAMS, "sysu", max_rank=4)
    assert r.cmc.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert r.mAP == pytest.approx(11 / 30)
    assert r.mINP == pytest.approx(2 / 5)


def test_sysu_cam6_query_ignores_nothing() -> None:
    # cam-6 query of pid 1: full ranking p2 p3 p3 p1 p2 p1 p1 -> deduplicated p2, p3, p1 -> rank 3.
    # True matches at ranks 4, 6, 7: AP = (1/4 + 2/6 + 3/7) / 3, INP = 3/7.
    r = _eval([SYSU_ROW], [1], SYSU_G_PIDS, [6], SYSU_G_CAMS, "sysu", max_rank=4)
    assert r.cmc.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert r.mAP == pytest.approx((1 / 4 + 2 / 6 + 3 / 7) / 3)
    assert r.mINP == pytest.approx(3 / 7)


def test_sysu_averages_over_queries() -> None:
    # the two queries above together: ranks 2 and 3
    r = _eval([SYSU_ROW, SYSU_ROW], [1, 1], SYSU_G_PIDS, [3, 6], SYSU_G_CAMS, "sysu", max_rank=3)
    assert r.cmc.tolist() == [0.0, 0.5, 1.0]
    assert r.mAP == pytest.approx((11 / 30 + (1 / 4 + 2 / 6 + 3 / 7) / 3) / 2)
    assert r.mINP == pytest.approx((2 / 5 + 3 / 7) / 2)
    assert (r.num_valid_queries, r.num_queries) == (2, 2)


# LLCM case: query pid 1 from camera 2; gallery index: (pid, cam, distance)
#   0: (1, 2, 0.1) same identity AND camera -> ignored     1: (4, 2, 0.2) same camera only -> kept
#   2: (1, 3, 0.3)  3: (4, 1, 0.4)  4: (5, 2, 0.5)  5: (1, 1, 0.6)
LLCM_G_PIDS = [1, 4, 1, 4, 5, 1]
LLCM_G_CAMS = [2, 2, 3, 1, 2, 1]
LLCM_ROW = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def test_llcm_ignores_same_identity_same_camera_only() -> None:
    # kept ranking 1(p4) 2(p1) 3(p4) 4(p5) 5(p1); deduplicated p4, p1, p5 -> rank 2
    # true matches at ranks 2 and 5: AP = (1/2 + 2/5) / 2 = 0.45, INP = 2/5
    r = _eval([LLCM_ROW], [1], LLCM_G_PIDS, [2], LLCM_G_CAMS, "llcm", max_rank=3)
    assert r.cmc.tolist() == [0.0, 1.0, 1.0]
    assert r.mAP == pytest.approx(0.45)
    assert r.mINP == pytest.approx(2 / 5)


def test_same_gallery_under_sysu_and_regdb_keeps_everything() -> None:
    # a cam-2 query ignores nothing under sysu; regdb never ignores: matches at ranks 1, 3, 6
    # AP = (1 + 2/3 + 3/6) / 3, INP = 3/6
    for protocol in ("sysu", "regdb"):
        r = _eval([LLCM_ROW], [1], LLCM_G_PIDS, [2], LLCM_G_CAMS, protocol, max_rank=2)
        assert r.cmc.tolist() == [1.0, 1.0]
        assert r.mAP == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
        assert r.mINP == pytest.approx(0.5)


def test_dedup_cmc_differs_from_plain_cmc() -> None:
    # three images of pid 2 precede the only true match: plain rank 4, identity-deduplicated rank 2
    dist, gp, gc = [[0.1, 0.2, 0.3, 0.4]], [2, 2, 2, 1], [1, 1, 1, 1]
    dedup = _eval(dist, [1], gp, [6], gc, "sysu", max_rank=4)
    plain = _eval(dist, [1], gp, [6], gc, "regdb", max_rank=4)
    assert dedup.cmc.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert plain.cmc.tolist() == [0.0, 0.0, 0.0, 1.0]
    for r in (dedup, plain):  # AP and INP use the full kept ranking either way
        assert r.mAP == pytest.approx(1 / 4)
        assert r.mINP == pytest.approx(1 / 4)


@pytest.mark.parametrize(
    ("gallery_pids", "rank", "ap", "inp"),
    [
        ([2, 1, 2], 2, 1 / 2, 1 / 2),  # all distances equal: order 0, 1, 2 -> match at rank 2
        ([1, 2, 1], 1, (1 + 2 / 3) / 2, 2 / 3),  # matches at ranks 1 and 3
        ([2, 2, 1], 3, 1 / 3, 1 / 3),
    ],
)
def test_ties_are_broken_by_gallery_index(gallery_pids: list[int], rank: int, ap: float, inp: float) -> None:
    r = _eval([[0.5, 0.5, 0.5]], [1], gallery_pids, [1], [1, 1, 1], "regdb", max_rank=3)
    assert r.cmc.tolist() == [float(k >= rank) for k in (1, 2, 3)]
    assert r.mAP == pytest.approx(ap)
    assert r.mINP == pytest.approx(inp)


def test_tied_identity_counts_in_dedup_rank_only_when_earlier_in_the_gallery() -> None:
    # pid 3 ties with the true match: it ranks first when its index is lower, second otherwise
    before = _eval([[0.5, 0.5, 0.9]], [1], [3, 1, 2], [1], [1, 1, 1], "sysu", max_rank=2)
    after = _eval([[0.5, 0.5, 0.9]], [1], [1, 3, 2], [1], [1, 1, 1], "sysu", max_rank=2)
    assert before.cmc.tolist() == [0.0, 1.0]
    assert after.cmc.tolist() == [1.0, 1.0]


def test_queries_without_true_match_are_excluded() -> None:
    # query 0 (pid 1) has a match at rank 2; query 1 (pid 9) has none; query 2 (pid 2, cam 2) only has a
    # same-camera image of itself, which llcm ignores
    dist = [[0.3, 0.1, 0.5], [0.1, 0.2, 0.3], [0.2, 0.1, 0.3]]
    r = _eval(dist, [1, 9, 2], [1, 3, 2], [1, 1, 2], [4, 4, 2], "llcm", max_rank=3)
    alone = _eval(dist[:1], [1], [1, 3, 2], [1], [4, 4, 2], "llcm", max_rank=3)
    assert (r.num_valid_queries, r.num_queries) == (1, 3)
    assert r.cmc.tolist() == alone.cmc.tolist() == [0.0, 1.0, 1.0]
    assert r.mAP == alone.mAP == pytest.approx(1 / 2)
    assert r.mINP == alone.mINP == pytest.approx(1 / 2)


def test_no_valid_query_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="no query has a true match"):
        _eval([[0.1, 0.2]], [7], [1, 2], [1], [1, 1], "regdb")


def test_cmc_shorter_than_max_rank_is_padded_with_its_last_value() -> None:
    # 3 gallery identities, identity rank 2: the curve is 0, 1, 1 and padded with 1 up to max_rank
    r = _eval([[0.2, 0.1, 0.3]], [1], [1, 2, 3], [1], [1, 1, 1], "sysu", max_rank=6)
    assert r.cmc.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_to_dict_reports_ranks_within_max_rank() -> None:
    r = _eval([[0.2, 0.1, 0.3]], [1], [1, 2, 3], [1], [1, 1, 1], "regdb", max_rank=20)
    d = r.to_dict()
    assert set(d) == {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP"}
    assert (d["rank1"], d["rank5"], d["mAP"], d["mINP"]) == (0.0, 1.0, 0.5, 0.5)
    assert all(isinstance(v, float) for v in d.values())
    short = _eval([[0.2, 0.1, 0.3]], [1], [1, 2, 3], [1], [1, 1, 1], "regdb", max_rank=5).to_dict()
    assert set(short) == {"rank1", "rank5", "mAP", "mINP"}


def test_result_is_read_only() -> None:
    r = _eval([[0.1]], [1], [1], [1], [1], "regdb", max_rank=1)
    with pytest.raises(ValueError, match="read-only"):
        r.cmc[0] = 0.0
    with pytest.raises(AttributeError):
        r.mAP = 0.0  # type: ignore[misc]


# --- equality with the per-query reference loop -----------------------------------------------------


def _random_case(seed: int, nq: int, ng: int, n_ids: int, levels: int, dtype: type) -> tuple[np.ndarray, ...]:
    """Random labels on SYSU-like cameras; ``levels`` > 0 draws distances from that many values (ties)."""
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, n_ids, nq), rng.integers(0, n_ids, ng)
    q_cams, g_cams = rng.choice([2, 3, 6], nq), rng.choice([1, 2, 3, 4, 5], ng)
    dist = rng.integers(0, levels, (nq, ng)) / max(levels, 1) if levels else rng.standard_normal((nq, ng))
    return dist.astype(dtype), q_pids, g_pids, q_cams, g_cams


def _assert_matches_naive(case: tuple[np.ndarray, ...], protocol: str, max_rank: int) -> None:
    try:
        cmc, m_ap, m_inp, n_valid = naive_evaluate(*case, protocol, max_rank)
    except ValueError:  # the reference found no valid query
        with pytest.raises(EvaluationError):
            evaluate(*case, protocol, max_rank)
        return
    r = evaluate(*case, protocol, max_rank)
    assert r.cmc.tolist() == cmc.tolist()
    assert r.mAP == pytest.approx(m_ap, rel=1e-12, abs=1e-12)
    assert r.mINP == pytest.approx(m_inp, rel=1e-12, abs=1e-12)
    assert r.num_valid_queries == n_valid


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    nq=st.integers(1, 12),
    ng=st.integers(1, 30),
    n_ids=st.integers(1, 6),
    levels=st.sampled_from([0, 1, 2, 3, 7]),
    dtype=st.sampled_from([np.float32, np.float64]),
    protocol=st.sampled_from(["sysu", "llcm", "regdb"]),
    max_rank=st.integers(1, 25),
)
def test_matches_per_query_loop_on_random_inputs(
    seed: int, nq: int, ng: int, n_ids: int, levels: int, dtype: type, protocol: str, max_rank: int
) -> None:
    _assert_matches_naive(_random_case(seed, nq, ng, n_ids, levels, dtype), protocol, max_rank)


@pytest.mark.parametrize("protocol", ["sysu", "llcm", "regdb"])
@pytest.mark.parametrize(
    ("levels", "dtype"), [(0, np.float32), (0, np.float64), (50, np.float32), (3, np.float64)]
)
def test_matches_per_query_loop_across_many_blocks(
    protocol: str, levels: int, dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "_BLOCK_ELEMENTS", 6000)  # 20 queries per block, 8 blocks
    _assert_matches_naive(_random_case(11, 150, 300, 30, levels, dtype), protocol, 20)


@pytest.mark.parametrize("protocol", ["sysu", "llcm", "regdb"])
def test_block_size_does_not_change_results(protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = _random_case(5, 40, 35, 6, 4, np.float32)
    reference = evaluate(*case, protocol)
    monkeypatch.setattr(metrics_module, "_BLOCK_ELEMENTS", 70)  # two queries per block
    blocked = evaluate(*case, protocol)
    assert blocked.cmc.tolist() == reference.cmc.tolist()
    assert (blocked.mAP, blocked.mINP) == (reference.mAP, reference.mINP)


# --- properties --------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), protocol=st.sampled_from(["sysu", "llcm", "regdb"]))
def test_perfect_distances_score_one(seed: int, protocol: str) -> None:
    # every query identity appears in the gallery from a camera that no protocol ignores (cam 1)
    rng = np.random.default_rng(seed)
    g_pids = np.r_[np.arange(5), rng.integers(0, 5, 10)]
    g_cams = np.r_[np.ones(5, dtype=int), rng.choice([1, 2, 4], 10)]
    q_pids, q_cams = rng.integers(0, 5, 8), rng.choice([3, 6], 8)
    dist = (q_pids[:, None] != g_pids[None, :]) + rng.random((8, 15)) * 0.5  # matches < 0.5 < others
    r = evaluate(dist, q_pids, g_pids, q_cams, g_cams, protocol)
    assert (r.cmc[0], r.mAP, r.mINP) == (1.0, 1.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), protocol=st.sampled_from(["sysu", "llcm", "regdb"]))
def test_permuting_gallery_or_queries_changes_nothing_without_ties(seed: int, protocol: str) -> None:
    dist, q_pids, g_pids, q_cams, g_cams = _random_case(seed, 15, 25, 4, 0, np.float64)
    try:
        base = evaluate(dist, q_pids, g_pids, q_cams, g_cams, protocol)
    except EvaluationError:
        return
    rng = np.random.default_rng(seed + 1)
    gp, qp = rng.permutation(25), rng.permutation(15)
    for r in (
        evaluate(dist[:, gp], q_pids, g_pids[gp], q_cams, g_cams[gp], protocol),
        evaluate(dist[qp], q_pids[qp], g_pids, q_cams[qp], g_cams, protocol),
    ):
        assert r.cmc == pytest.approx(base.cmc, abs=1e-12)
        assert r.mAP == pytest.approx(base.mAP, rel=1e-12)
        assert r.mINP == pytest.approx(base.mINP, rel=1e-12)
        assert r.num_valid_queries == base.num_valid_queries


@pytest.mark.parametrize("protocol", ["sysu", "llcm", "regdb"])
def test_input_is_not_modified_and_layout_does_not_matter(protocol: str) -> None:
    dist, q_pids, g_pids, q_cams, g_cams = _random_case(3, 30, 20, 5, 0, np.float32)
    keep = dist.copy()
    r = evaluate(dist, q_pids, g_pids, q_cams, g_cams, protocol)
    assert np.array_equal(dist, keep)
    fortran = evaluate(np.asfortranarray(dist), q_pids, g_pids, q_cams, g_cams, protocol)
    as_lists = evaluate(
        dist.tolist(), q_pids.tolist(), g_pids.tolist(), q_cams.tolist(), g_cams.tolist(), protocol
    )
    for other in (fortran, as_lists):
        assert other.cmc.tolist() == r.cmc.tolist()
        assert other.mAP == pytest.approx(r.mAP, rel=1e-6)


def test_integer_distances_are_accepted() -> None:
    r = evaluate(np.array([[3, 1, 2]]), [1], [1, 2, 1], [1], [1, 1, 1], "regdb", max_rank=3)
    # order 1(p2) 2(p1) 0(p1): matches at ranks 2 and 3
    assert r.cmc.tolist() == [0.0, 1.0, 1.0]
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


# --- input validation --------------------------------------------------------------------------------

GOOD = (np.zeros((2, 3)), [1, 2], [1, 2, 3], [1, 1], [2, 2, 2])


@pytest.mark.parametrize(
    ("position", "value", "message"),
    [
        (0, np.zeros(3), "2-D"),
        (0, np.zeros((2, 0)), "at least one query and one gallery item"),
        (0, np.array([[0.0, np.nan, 0.0], [0.0, 0.0, 0.0]]), r"finite.*\[0, 1\]"),
        (0, np.array([[0.0, 0.0, 0.0], [np.inf, 0.0, 0.0]]), r"finite.*\[1, 0\]"),
        (0, np.zeros((2, 3), dtype=complex), "real numbers"),
        (1, [1, 2, 3], "query_pids has 3 entries but distmat has 2 rows"),
        (2, [[1, 2, 3]], "gallery_pids must be a 1-D array"),
        (3, [1.5, 2.0], "query_cams must hold integers"),
        (4, [1, 2], "gallery_cams has 2 entries but distmat has 3 columns"),
    ],
)
def test_malformed_input_is_rejected(position: int, value: object, message: str) -> None:
    args = list(GOOD)
    args[position] = value
    with pytest.raises(EvaluationError, match=message):
        evaluate(*args, "regdb")


def test_unknown_protocol_lists_the_valid_ones() -> None:
    with pytest.raises(EvaluationError, match=r"'market'.*sysu, regdb, llcm"):
        evaluate(*GOOD, "market")


@pytest.mark.parametrize("max_rank", [0, -3, True, 2.5])
def test_max_rank_must_be_a_positive_integer(max_rank: object) -> None:
    with pytest.raises(EvaluationError, match="max_rank must be an integer >= 1"):
        evaluate(*GOOD, "regdb", max_rank)  # type: ignore[arg-type]


def test_evaluation_error_is_a_tvifm_error() -> None:
    assert issubclass(EvaluationError, TvifmError)


# --- mean_results ------------------------------------------------------------------------------------


def _result(cmc: list[float], m_ap: float, m_inp: float) -> RetrievalResult:
    return RetrievalResult(np.array(cmc), m_ap, m_inp, num_valid_queries=4, num_queries=5)


def test_mean_results_averages_trials_with_population_std() -> None:
    summary = mean_results([_result([0.2, 0.6], 0.3, 0.1), _result([0.4, 1.0], 0.5, 0.3)])
    assert summary.cmc.tolist() == pytest.approx([0.3, 0.8])
    assert summary.cmc_std.tolist() == pytest.approx([0.1, 0.2])
    assert (summary.mAP, summary.mAP_std) == pytest.approx((0.4, 0.1))
    assert (summary.mINP, summary.mINP_std) == pytest.approx((0.2, 0.1))
    assert len(summary.trials) == 2
    d = summary.to_dict()
    assert d["rank1"] == pytest.approx(0.3) and d["rank1_std"] == pytest.approx(0.1)
    assert d["trials"] == 2.0 and "rank5" not in d


def test_mean_results_rejects_empty_or_mixed_lengths() -> None:
    with pytest.raises(EvaluationError, match="at least one"):
        mean_results([])
    with pytest.raises(EvaluationError, match="CMC length"):
        mean_results([_result([0.1], 0.1, 0.1), _result([0.1, 0.2], 0.1, 0.1)])
