"""The main job, every stage end to end (``jobs/pipeline.py``):

SynthTri (or a real dataset) -> captioner fine-tuning -> Ray Data captioning + augmentation -> stage 1
-> stage 2 (Ray Train + DeepSpeed) -> test evaluation -> MLflow registry.

Each stage reads and writes storage and is skipped when its output already exists (SynthTri with the
same arguments, captioners on disk, a complete captioning report, finished training runs resume to
their end at once), so a re-run after an interruption continues where it stopped. MLflow is the
configured server, or an embedded one that this job starts and stops (its store stays in
``tracking.local_root``; ``make mlflow-ui`` browses it afterwards).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from tvifm.config.schema import Config
from tvifm.data import storage

MLFLOW_UI = "http://127.0.0.1:5000"


@dataclass
class PipelineResult:
    """What the pipeline produced: the final report, the registered version and stage timings."""

    report: dict[str, Any]
    exports: dict[str, str]
    registration: Any
    tracking_uri: str | None
    seconds: dict[str, float] = field(default_factory=dict)


def _say(message: str) -> None:
    print(f"[tvifm] {message}", flush=True)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        _say(f"{name} ...")
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - start
        _say(f"{name} done in {self.seconds[name]:.0f} s")
        return out


def prepare_synth(cfg: Config) -> None:
    """Generate SynthTri at ``data.root`` unless the same SynthTri is already there."""
    from tvifm.data.synth import generate

    s = cfg.synth
    summary = generate(
        cfg.data.root, ids=s.ids, seed=s.seed, image_size=tuple(s.image_size),
        images_per_cam=tuple(s.images_per_cam),
    )  # fmt: skip
    state = "reused" if summary.reused else "generated"
    _say(f"SynthTri at {cfg.data.root}: {state} ({summary.ids} identities)")


def captioners_ready(cfg: Config) -> bool:
    """True when both captioners the captioning job needs are on storage."""
    from tvifm.captioning.job import checkpoint_for

    c = cfg.caption
    dirs = [checkpoint_for(c, m) for m in c.modalities]
    return all(storage.exists(storage.join(d, "config.json"), c.s3_endpoint) for d in dirs)


def finetune_captioners(cfg: Config) -> None:
    """Fine-tune the RGB and IR captioners on the training split (skipped when both exist)."""
    from tvifm.captioning.finetune import finetune

    if captioners_ready(cfg):
        _say(f"captioners found in {cfg.caption.captioner_dir}; fine-tuning skipped")
        return
    for result in finetune(cfg.data.root, cfg, cfg.caption, cfg.caption.modalities):
        loss = f"{result.final_loss:.3f}"
        _say(f"{result.modality} captioner: {result.steps} steps, loss {loss}, saved to {result.directory}")


def caption_dataset(cfg: Config) -> None:
    """Caption every image with Ray Data and augment the captions (resumable: only missing rows run)."""
    from tvifm.captioning.job import run_caption_job

    result = run_caption_job(cfg.data.root, cfg.caption, dataset=cfg.data.dataset)
    _say(f"captions: {result.to_dict().get('counts')} (skipped images: {len(result.skipped)})")


def mlflow_hint(cfg: Config, uri: str, embedded: bool) -> str:
    """Where to look at the runs: the server in use, or how to reopen the embedded server's store."""
    if not embedded:
        t = cfg.tracking
        return f"MLflow UI: {uri} (experiment {t.experiment}, registered model {t.registered_model})"
    return (
        f"MLflow UI: run `make mlflow-ui` and open {MLFLOW_UI} (the store in {cfg.tracking.local_root}; "
        "the embedded server of this job stops with it)"
    )


def run_pipeline(cfg: Config) -> PipelineResult:
    """Run every stage; prints the final test table and the MLflow UI address."""
    from tvifm.data.stats import format_stats, stats_for
    from tvifm.engine.job import tracking_session, train_job, training_cluster
    from tvifm.eval.offline import format_results

    timer = _Timer()
    embedded = not (cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI"))  # decided before we set it
    if cfg.data.dataset == "synth":
        timer.run("SynthTri", prepare_synth, cfg)
    _say("dataset statistics:\n" + format_stats(stats_for(cfg.data.dataset, cfg.data.root, cfg.data.trial)))
    with tracking_session(cfg) as uri, training_cluster(cfg):
        timer.run("captioner fine-tuning", finetune_captioners, cfg)
        timer.run("captioning + augmentation (Ray Data)", caption_dataset, cfg)
        result = timer.run("training, evaluation, registry", train_job, cfg, uri)
        _say("test results (%):\n" + format_results(result.report))
        if result.registration is not None:
            r = result.registration
            _say(
                f"registered {r.name} version {r.version} (validation Rank-1 {100 * r.val_rank1:.1f}); "
                f"alias candidate{', production' if r.promoted else ''}"
            )
        if uri:
            _say(mlflow_hint(cfg, uri, embedded))
    times = ", ".join(f"{k} {v:.0f} s" for k, v in timer.seconds.items())
    _say(f"stage times: {times}; total {sum(timer.seconds.values()):.0f} s")
    return PipelineResult(result.report, result.exports, result.registration, uri, timer.seconds)
