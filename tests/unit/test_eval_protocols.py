"""Evaluation-set builders (SYSU-MM01, RegDB, LLCM) and trial-averaged evaluation."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from tvifm.data.base import EvalSet, Modality, Sample
from tvifm.errors import ConfigError, DatasetError
from tvifm.eval import (
    EvaluationError,
    evaluate,
    evaluate_sets,
    llcm_eval_sets,
    regdb_eval_sets,
    sysu_eval_sets,
)


def _sample(pid: int, cam: int, n: int, modality: Modality) -> Sample:
    rel = f"cam{cam}/{pid:04d}/{n:04d}.jpg"
    return Sample(path=f"/data/{rel}", rel=rel, pid=pid, cam=cam, modality=modality)


def _sysu_candidates() -> tuple[list[Sample], list[Sample]]:
    """IR images of cams 3, 6 and visible images of cams 1, 2, 4, 5 with uneven group sizes (0..14)."""
    rng = random.Random(7)
    ir = [
        _sample(pid, cam, n, "ir") for pid in range(1, 7) for cam in (3, 6) for n in range(rng.randint(1, 4))
    ]
    visible = [
        _sample(pid, cam, n, "visible")
        for pid in range(1, 7)
        for cam in (1, 2, 4, 5)
        for n in range(rng.choice([0, 1, 3, 10, 14]))
    ]
    return ir, visible


def _groups(samples: list[Sample]) -> Counter[tuple[int, int]]:
    return Counter((s.pid, s.cam) for s in samples)


IR, VISIBLE = _sysu_candidates()


# --- SYSU-MM01 ---------------------------------------------------------------------------------------


def test_sysu_queries_are_all_ir_images_of_cams_3_and_6_every_trial() -> None:
    extra_visible_in_query = [*IR, VISIBLE[0]]
    sets = sysu_eval_sets(extra_visible_in_query, VISIBLE, trials=3)
    for es in sets:
        assert es.query == IR
        assert {s.cam for s in es.query} == {3, 6} and {s.modality for s in es.query} == {"ir"}


@pytest.mark.parametrize(("shot", "cap"), [("single", 1), ("multi", 10)])
def test_sysu_gallery_counts_per_identity_and_camera(shot: str, cap: int) -> None:
    available = _groups(VISIBLE)
    for es in sysu_eval_sets(IR, VISIBLE, search="all", shot=shot, trials=4):
        assert _groups(es.gallery) == {group: min(cap, n) for group, n in available.items()}
        assert len(set(es.gallery)) == len(es.gallery)  # drawn without replacement
        assert set(es.gallery) <= set(VISIBLE)


def test_sysu_indoor_search_uses_cameras_1_and_2_only() -> None:
    sets = sysu_eval_sets(IR, VISIBLE, search="indoor", shot="multi", trials=2)
    expected = {g: min(10, n) for g, n in _groups(VISIBLE).items() if g[1] in (1, 2)}
    for es in sets:
        assert _groups(es.gallery) == expected
        assert es.name == "sysu-indoor-multi" and es.protocol == "sysu"


def test_sysu_trials_differ_and_are_numbered() -> None:
    sets = sysu_eval_sets(IR, VISIBLE, trials=10)
    assert [es.trial for es in sets] == list(range(10))
    assert len({tuple(s.path for s in es.gallery) for es in sets}) > 1


def test_sysu_same_seed_same_sets_whatever_the_input_order() -> None:
    shuffled = VISIBLE[::-1]
    random.Random(3).shuffle(shuffled)
    a = sysu_eval_sets(IR, VISIBLE, shot="multi", trials=3, seed=5)
    b = sysu_eval_sets(IR, shuffled, shot="multi", trials=3, seed=5)
    other = sysu_eval_sets(IR, VISIBLE, shot="multi", trials=3, seed=6)
    assert [es.gallery for es in a] == [es.gallery for es in b]
    assert [es.gallery for es in a] != [es.gallery for es in other]


def test_sysu_missing_query_or_gallery_is_a_clear_error() -> None:
    with pytest.raises(DatasetError, match=r"sysu \(all search\): no ir query images from cameras 3, 6"):
        sysu_eval_sets(VISIBLE, VISIBLE)
    outdoor_only = [s for s in VISIBLE if s.cam in (4, 5)]
    with pytest.raises(DatasetError, match=r"indoor search\): no visible gallery images from cameras 1, 2"):
        sysu_eval_sets(IR, outdoor_only, search="indoor")


def test_sysu_duplicate_candidate_is_rejected() -> None:
    with pytest.raises(DatasetError, match="listed more than once"):
        sysu_eval_sets(IR, [*VISIBLE, VISIBLE[3]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"search": "outdoor"}, "sysu search must be one of 'all', 'indoor'"),
        ({"shot": "double"}, "sysu shot must be one of 'single', 'multi'"),
        ({"trials": 0}, "trials must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_sysu_bad_options_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sysu_eval_sets(IR, VISIBLE, **kwargs)  # type: ignore[arg-type]


# --- RegDB and LLCM ----------------------------------------------------------------------------------

LLCM_VIS = [_sample(pid, cam, n, "visible") for pid in (1, 2, 3) for cam in (1, 4, 7) for n in range(3)]
LLCM_IR = [_sample(pid, cam, n, "ir") for pid in (1, 2, 3) for cam in (1, 2, 9) for n in range(pid)]


def test_regdb_directions_use_whole_sets() -> None:
    (forward,) = regdb_eval_sets(LLCM_VIS, LLCM_IR, direction="ir2rgb", trial=4)
    (backward,) = regdb_eval_sets(LLCM_VIS, LLCM_IR, direction="rgb2ir", trial=4)
    assert (forward.query, forward.gallery) == (LLCM_IR, LLCM_VIS)
    assert (backward.query, backward.gallery) == (LLCM_VIS, LLCM_IR)
    assert (forward.name, forward.protocol, forward.trial) == ("regdb-ir2rgb", "regdb", 4)


@pytest.mark.parametrize("build", [regdb_eval_sets, llcm_eval_sets])
def test_lists_in_the_wrong_modality_are_rejected(build: Callable[..., list[EvalSet]]) -> None:
    with pytest.raises(DatasetError, match=r"the visible list holds \d+ ir samples"):
        build(LLCM_IR, LLCM_VIS)
    with pytest.raises(DatasetError, match="no ir images, so the gallery side is empty"):
        build(LLCM_VIS, [], direction="rgb2ir")
    with pytest.raises(ConfigError, match="direction must be one of 'ir2rgb', 'rgb2ir'"):
        build(LLCM_VIS, LLCM_IR, direction="both")


@pytest.mark.parametrize(
    ("direction", "queries", "candidates"), [("ir2rgb", LLCM_IR, LLCM_VIS), ("rgb2ir", LLCM_VIS, LLCM_IR)]
)
def test_llcm_gallery_has_one_image_per_identity_and_camera(
    direction: str, queries: list[Sample], candidates: list[Sample]
) -> None:
    sets = llcm_eval_sets(LLCM_VIS, LLCM_IR, direction=direction, trials=6, seed=2)
    for es in sets:
        assert es.query == queries
        assert _groups(es.gallery) == dict.fromkeys(_groups(candidates), 1)
        assert es.protocol == "llcm" and es.name == f"llcm-{direction}"
    assert len({tuple(es.gallery) for es in sets}) > 1
    again = llcm_eval_sets(LLCM_VIS, LLCM_IR, direction=direction, trials=6, seed=2)
    assert [es.gallery for es in again] == [es.gallery for es in sets]


# --- evaluate_sets -----------------------------------------------------------------------------------


def _one_hot(samples: list[Sample]) -> np.ndarray:
    """A perfect embedder: the identity as a one-hot row."""
    return np.eye(8)[[s.pid for s in samples]]


def test_perfect_features_score_one_on_every_trial() -> None:
    summary = evaluate_sets(sysu_eval_sets(IR, VISIBLE, trials=3), _one_hot)
    assert (summary.cmc[0], summary.mAP, summary.mINP) == (1.0, 1.0, 1.0)
    assert (summary.cmc_std[0], summary.mAP_std, summary.mINP_std) == (0.0, 0.0, 0.0)
    assert len(summary.trials) == 3


def test_embedders_run_once_on_the_distinct_samples_of_their_role() -> None:
    calls: dict[str, list[list[Sample]]] = {"query": [], "gallery": []}

    def record(role: str) -> Callable[[list[Sample]], np.ndarray]:
        def embed(samples: list[Sample]) -> np.ndarray:
            calls[role].append(samples)
            return _one_hot(samples)

        return embed

    sets = sysu_eval_sets(IR, VISIBLE, shot="multi", trials=4)
    evaluate_sets(sets, record("query"), record("gallery"))
    assert len(calls["query"]) == len(calls["gallery"]) == 1
    assert calls["query"][0] == IR
    gallery_seen = calls["gallery"][0]
    assert len(set(gallery_seen)) == len(gallery_seen)
    assert set(gallery_seen) == {s for es in sets for s in es.gallery}


def test_hand_computed_set_and_mapping_equals_callable() -> None:
    # query (pid 1) [1, 0]; gallery pid 1 at [0, 1] (cosine distance 1), pid 2 at [1, 0.1] (about 0.005):
    # pid 2 ranks first -> Rank-1 0, AP = INP = 1/2
    q, g1, g2 = _sample(1, 2, 0, "ir"), _sample(1, 1, 0, "visible"), _sample(2, 1, 0, "visible")
    features = {q: np.array([1.0, 0.0]), g1: np.array([0.0, 1.0]), g2: np.array([1.0, 0.1])}
    sets = regdb_eval_sets([g1, g2], [q])
    by_mapping = evaluate_sets(sets, features, max_rank=2)
    by_callable = evaluate_sets(sets, lambda samples: np.stack([features[s] for s in samples]), max_rank=2)
    for summary in (by_mapping, by_callable):
        assert summary.cmc.tolist() == [0.0, 1.0]
        assert (summary.mAP, summary.mINP) == pytest.approx((0.5, 0.5))
    euclidean = evaluate_sets(sets, features, distance="euclidean", max_rank=2)
    assert euclidean.cmc.tolist() == [0.0, 1.0]


def test_trial_results_are_those_of_evaluate() -> None:
    rng = np.random.default_rng(0)
    table = {s: rng.standard_normal(6) for s in [*LLCM_VIS, *LLCM_IR]}
    sets = llcm_eval_sets(LLCM_VIS, LLCM_IR, trials=3)
    summary = evaluate_sets(sets, table)
    for es, result in zip(sets, summary.trials, strict=True):
        q = np.stack([table[s] for s in es.query])
        g = np.stack([table[s] for s in es.gallery])
        q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
        direct = evaluate(
            1 - q @ g.T,
            [s.pid for s in es.query],
            [s.pid for s in es.gallery],
            [s.cam for s in es.query],
            [s.cam for s in es.gallery],
            "llcm",
        )
        assert result.cmc.tolist() == direct.cmc.tolist()
        assert result.mAP == pytest.approx(direct.mAP)
    assert summary.mAP == pytest.approx(np.mean([r.mAP for r in summary.trials]))


def test_evaluate_sets_errors_name_the_problem() -> None:
    sets = regdb_eval_sets(LLCM_VIS, LLCM_IR)
    with pytest.raises(EvaluationError, match="no feature for"):
        evaluate_sets(sets, {LLCM_IR[0]: np.ones(3)})
    with pytest.raises(EvaluationError, match=r"must give a real \(samples x dim\) array"):
        evaluate_sets(sets, lambda samples: np.ones((len(samples) - 1, 3)))
    with pytest.raises(EvaluationError, match="all zeros"):
        evaluate_sets(sets, lambda samples: np.zeros((len(samples), 3)))
    with pytest.raises(EvaluationError, match="one evaluation"):
        evaluate_sets([*sets, *regdb_eval_sets(LLCM_VIS, LLCM_IR, direction="rgb2ir")], _one_hot)
    with pytest.raises(EvaluationError, match="at least one EvalSet"):
        evaluate_sets([], _one_hot)
    with pytest.raises(EvaluationError, match="gallery list is empty"):
        evaluate_sets([EvalSet("x", "regdb", LLCM_IR, [])], _one_hot)
    with pytest.raises(ConfigError, match="distance must be one of"):
        evaluate_sets(sets, _one_hot, distance="manhattan")
