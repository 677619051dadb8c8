"""Score-threshold calibration: thresholds honour their false-match rate and are the lowest that do."""

from __future__ import annotations

import numpy as np
import pytest

from tvifm.experiments.thresholds import PairScores, calibrate, pair_scores


def test_pairs_are_split_by_identity() -> None:
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    gallery = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    pairs = pair_scores("ir", queries, [1, 2], gallery, [1, 1, 2])
    assert sorted(pairs.true.tolist()) == pytest.approx([0.6, 1.0, 1.0])  # (q1,g1), (q1,g2), (q2,g3)
    assert sorted(pairs.false.tolist()) == pytest.approx([0.0, 0.0, 0.8])
    assert pairs.best_true.tolist() == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2])
def test_a_threshold_lets_through_at_most_its_false_match_rate_and_is_the_lowest_that_does(
    rate: float,
) -> None:
    rng = np.random.default_rng(0)
    false = np.round(rng.normal(0.0, 0.2, 5000), 3)  # rounded: ties at the threshold must not count twice
    true = rng.normal(0.5, 0.2, 500)
    pairs = PairScores("ir", true, false, true[:100])
    (t,) = calibrate(pairs, [rate])
    assert t.fmr == np.mean(false >= t.threshold) <= rate
    lower = false[false < t.threshold].max()  # the next lower candidate lets through more than the rate
    assert np.mean(false >= lower) > rate
    assert t.recall == np.mean(true >= t.threshold) and t.queries_found == np.mean(true[:100] >= t.threshold)


def test_calibration_needs_both_kinds_of_pairs() -> None:
    with pytest.raises(ValueError, match="both true- and false-match pairs"):
        calibrate(PairScores("ir", np.array([0.5]), np.array([]), np.array([0.5])))
