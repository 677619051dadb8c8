"""Both training stages on a small SynthTri: losses fall, retrieval beats chance, runs resume exactly."""

from __future__ import annotations

import json

import pytest

from tvifm.checkpoint import CheckpointError
from tvifm.cli import main as cli
from tvifm.engine.trainer import train
from tvifm.eval.offline import evaluate_run

pytestmark = pytest.mark.slow


def test_two_stages_learn_and_report_every_mode(tiny_cfg, tmp_path) -> None:
    cfg = tiny_cfg(
        "base.epochs=4", "base.batches_per_epoch=8", "base.lr=1e-3",
        "joint.epochs=3", "joint.batches_per_epoch=8", "joint.lr=1e-3",
    )  # fmt: skip
    base = train(cfg, "base", tmp_path / "base", progress=False)
    losses = [h.losses["total"] for h in base.history]
    assert losses[-1] < losses[0]
    assert (tmp_path / "base" / "model.safetensors").is_file()
    assert (tmp_path / "base" / "config.yaml").is_file()

    joint = train(cfg, "joint", tmp_path / "joint", init=tmp_path / "base", progress=False)
    joint_losses = [h.losses["total"] for h in joint.history]
    assert joint_losses[-1] < joint_losses[0]
    assert joint.best_val is not None and "ensemble" in joint.best_val
    report = evaluate_run(tmp_path / "joint", trials=2, progress=False)
    assert set(report["protocols"]) == {"all-single", "indoor-single", "rgb2ir"}
    n_ids = report_test_ids(report)
    for mode in ("ir", "text", "fusion", "ensemble"):
        metrics = report["protocols"]["all-single"][mode]
        # a handful of test identities: a short run is about mechanics; retrieval quality against
        # chance is measured at full size by benchmarks/ablation.py (docs/ablation.md)
        assert 0.0 <= metrics["mINP"] <= metrics["mAP"] <= 1.0, mode
        assert metrics["rank1"] <= metrics["rank5"] <= metrics["rank10"] <= metrics["rank20"], mode
        if n_ids <= 20:  # every identity is within the first 20 of the deduplicated ranking
            assert metrics["rank20"] == 1.0, mode


def report_test_ids(report: dict) -> int:
    from tvifm.data.registry import load_dataset

    return len(load_dataset("synth", report["root"]).test_ids)


class KilledError(RuntimeError):
    pass


def test_killed_run_resumes_from_its_last_checkpoint_and_matches_an_uninterrupted_one(
    tiny_cfg, tmp_path
) -> None:
    cfg = tiny_cfg("base.epochs=3")
    straight = train(cfg, "base", tmp_path / "straight", progress=False)

    def kill_after_first_epoch(log) -> None:
        if log.epoch == 0:
            raise KilledError

    with pytest.raises(KilledError):
        train(cfg, "base", tmp_path / "resumed", callbacks=[kill_after_first_epoch], progress=False)
    resumed = train(cfg, "base", tmp_path / "resumed", progress=False)
    assert [h.epoch for h in resumed.history] == [0, 1, 2]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a.losses["total"] == pytest.approx(b.losses["total"], rel=1e-4)
    assert resumed.best_epoch == straight.best_epoch

    with pytest.raises(CheckpointError, match="different config"):
        train(tiny_cfg("base.epochs=3", "base.lr=0.1"), "base", tmp_path / "resumed", progress=False)
    # stage 2's settings are not stage 1's: the finished run is reused as it is
    reused = train(tiny_cfg("base.epochs=3", "joint.lr=0.1"), "base", tmp_path / "resumed", progress=False)
    assert [h.epoch for h in reused.history] == [0, 1, 2] and reused.best_epoch == straight.best_epoch


def test_a_finished_run_is_reused_when_only_other_concerns_change(tiny_cfg, tmp_path) -> None:
    """Captioning, serving, tracking and execution settings are not part of a training run."""
    first = train(tiny_cfg("base.epochs=1"), "base", tmp_path / "run", progress=False)
    weights = (tmp_path / "run" / "model.safetensors").read_bytes()
    elsewhere = ("caption.actors=1", "serve.port=9001", "tracking.experiment=other", "dist.num_workers=2")
    again = train(tiny_cfg("base.epochs=1", *elsewhere), "base", tmp_path / "run", progress=False)
    assert [h.epoch for h in again.history] == [0] and again.best_epoch == first.best_epoch
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights  # nothing was retrained
    with pytest.raises(CheckpointError, match=r"data\.random_erasing differ"):
        train(tiny_cfg("base.epochs=1", "data.random_erasing=0.5"), "base", tmp_path / "run", progress=False)


def test_the_trainer_takes_its_parts(tiny_cfg, tmp_path) -> None:
    """A caller (an experiment, a subclass) hands the trainer its own loss and evaluator."""
    import torch

    from tvifm.engine.trainer import Trainer
    from tvifm.losses import ReIDLoss

    cfg = tiny_cfg("base.epochs=2", "base.eval_every=1")
    seen: dict[str, list] = {"loss": [], "val": []}

    class CountingLoss(ReIDLoss):
        def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen["loss"].append(1)
            return super().forward(*args, **kwargs)

    class LastEpochWins:
        def evaluate(self, model: torch.nn.Module, stage: str) -> dict:
            seen["val"].append(stage)
            return {"ir": {"rank1": float(len(seen["val"])), "mAP": 0.0}}

        def score(self, val: dict) -> tuple:
            return (val["ir"]["rank1"],)

    loss, evaluator = CountingLoss(cfg.base.loss), LastEpochWins()
    trainer = Trainer(cfg, "base", tmp_path / "run", loss=loss, evaluator=evaluator, progress=False)
    result = trainer.fit()
    assert seen["val"] == ["base", "base"] and result.best_epoch == 1  # the evaluator's score selected
    assert len(seen["loss"]) == sum(1 for _ in trainer.loader) * 2

    class NoTriplet(Trainer):
        def build_loss(self) -> torch.nn.Module:
            seen["built"] = ["mine"]
            return CountingLoss(cfg.base.loss)

    NoTriplet(cfg, "base", tmp_path / "sub", progress=False)
    assert seen["built"] == ["mine"]


def test_cli_train_and_evaluate_json(tiny_cfg, small_synth, tmp_path, capsys) -> None:
    overrides = [
        f"{k}={v}" for k, v in _flat(tiny_cfg()).items() if k.startswith(("data.", "backbone.", "text."))
    ]
    run = tmp_path / "run"
    assert (
        cli(
            [
                "train",
                "--local",
                "--stage",
                "base",
                "--root",
                str(small_synth),
                "--out",
                str(run),
                "base.epochs=1",
                *overrides,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli(["evaluate", "--checkpoint", str(run), "--mode", "ir", "--trials", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    metrics = report["protocols"]["all-single"]["ir"]
    assert set(metrics) >= {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP"}
    assert 0.0 <= metrics["mINP"] <= metrics["mAP"] <= 1.0 or metrics["mINP"] <= 1.0
    assert (report["sampling"], report["trials"]) == ("seeded", 1)  # SynthTri's own gallery sampling
    args = ["evaluate", "--checkpoint", str(run), "--mode", "ir", "--trials", "1", "--sampling", "standard"]
    assert cli([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sampling"] == "standard"
    assert cli(args) == 0
    assert "gallery sampling: standard, 1 trial" in capsys.readouterr().out
    assert report["rerank"] is None
    assert cli([*args, "--rerank", "--json"]) == 0
    reranked = json.loads(capsys.readouterr().out)
    assert reranked["rerank"] == {"k1": 20, "k2": 6, "lambda": 0.3}
    assert set(reranked["protocols"]["all-single"]["ir"]) >= {"rank1", "mAP", "mINP"}
    assert cli([*args, "--rerank"]) == 0
    assert "k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)" in capsys.readouterr().out
    assert cli(["evaluate", "--checkpoint", str(tmp_path / "missing"), "--json"]) == 2
    assert (
        cli(
            [
                "train",
                "--local",
                "--stage",
                "joint",
                "--root",
                str(small_synth),
                "--out",
                str(tmp_path / "j"),
                "--init",
                str(tmp_path / "missing"),
                *overrides,
            ]
        )
        == 2
    )


def _flat(cfg) -> dict[str, str]:
    from tvifm.config import to_dict

    out = {}
    for section, values in to_dict(cfg).items():
        if isinstance(values, dict):
            for k, v in values.items():
                if not isinstance(v, dict) and v is not None:
                    out[f"{section}.{k}"] = json.dumps(v)
    return out
