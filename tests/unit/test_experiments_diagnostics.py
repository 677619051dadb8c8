"""tvifm.experiments on a tiny trained seed: the ablation trains stage 1 and stage-2 variants (and reuses
them), evaluates its rows, and the validation diagnostics agree with the library's own validation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tvifm.eval.evaluator import ValidationSet
from tvifm.experiments import ablation as abl
from tvifm.experiments import diagnostics as diag
from tvifm.models import RunDir


def _validation(run_dir: Path, stage: str) -> dict[str, dict[str, float]]:
    """The library's validation of a run, with the test protocol's number of trials."""
    run = diag.validation_run(run_dir)
    cfg = run.loaded.config
    trials = replace(cfg, eval=replace(cfg.eval, val_trials=cfg.eval.trials))
    return ValidationSet.from_splits(run.splits, run.text, trials).evaluate(run.loaded.model, stage)


def test_a_tiny_ablation_seed_trains_evaluates_and_diagnoses(tiny_cfg, tmp_path) -> None:
    cfg = tiny_cfg("joint.batches_per_epoch=2", "joint.epochs=2")
    keys = ("fusion-only", "joint")
    runs = abl.train_seed(cfg, 0, tmp_path, keys)
    assert set(runs) == {"base", *keys}
    assert RunDir(runs["base"]).is_finished(cfg.base.epochs)
    assert all(RunDir(runs[k]).is_finished(cfg.joint.epochs) for k in keys)
    assert RunDir(runs["fusion-only"]).config().joint.streams == ["visible", "fusion"]
    assert RunDir(runs["joint"]).config().joint.text_aug_prob == 0.0

    minutes = abl.train_minutes(tmp_path, [0])
    assert minutes[0] >= 0.0
    assert abl.train_seed(cfg, 0, tmp_path, keys) == runs  # finished runs are reused ...
    assert abl.train_minutes(tmp_path, [0]) == minutes  # ... and train nothing

    rows = abl.evaluate_rows({**runs, "joint-aug": runs["joint"]})
    assert set(rows) == {r.name for r in (*abl.ROWS, *abl.REFERENCES)}
    for by_protocol in rows.values():
        assert set(by_protocol) == set(abl.PROTOCOLS)
        for metrics in by_protocol.values():
            assert 0.0 <= metrics["mINP"] <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["rank1"] <= 1.0
    assert rows["+ joint learning"] != rows["+ ensemble retrieval"]  # one model, two query modes

    terms = diag.mer_terms(runs["joint"])
    assert list(terms) == list(diag.MER_TERM_SUMS)
    joint_val = _validation(runs["joint"], "joint")
    assert terms["fusion"] == pytest.approx(100 * joint_val["fusion"]["rank1"])
    assert terms["fusion + IR + text (MER)"] == pytest.approx(100 * joint_val["ensemble"]["rank1"])

    stage1 = diag.stage1_figures(runs["base"])
    assert list(stage1) == ["IR identity", "IR family", *diag.WITHIN]
    assert all(0.0 <= v <= 100.0 for v in stage1.values())
    assert stage1["IR identity"] == pytest.approx(100 * _validation(runs["base"], "base")["ir"]["rank1"])
    assert stage1["IR family"] >= stage1["IR identity"]  # the right person is also the right family

    choice = {"two streams": "fusion-only", "three streams": "joint"}
    figures = diag.choice_figures(runs, choice)
    assert set(figures) == {f"{label} / {m}" for label in choice for m in diag.CHOICE_MODES}
    best = RunDir(runs["joint"]).meta()["best_val"]
    assert figures["three streams / ensemble"] == pytest.approx(100 * best["ensemble"]["rank1"])
    losses = diag.final_losses(runs, choice)
    assert set(losses) == {"two streams / final ce", "three streams / final ce"}
    assert all(v > 0 for v in losses.values())
    gains = diag.late_gains(runs, {"joint fusion": ("joint", "fusion")})
    rank1 = [h["val"]["fusion"]["rank1"] for h in RunDir(runs["joint"]).history() if h["val"]]
    assert gains == {"joint fusion late gain": pytest.approx(100 * (rank1[-1] - rank1[-2]))}
