"""The main job on the embedded default: SynthTri -> stage 1 -> stage 2 -> evaluation.

Each stage writes its output under ``cfg.out_dir`` (or the dataset root) and is skipped when that
output is already complete, so a re-run after an interruption continues where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvifm.config.schema import Config
from tvifm.engine.checkpoint import META_FILE, read_json


@dataclass
class PipelineResult:
    """Where the pipeline wrote its outputs and the final test metrics."""

    dataset_root: Path
    base_run: Path
    joint_run: Path
    stats: dict[str, Any]
    report: dict[str, Any]


def _say(message: str) -> None:
    print(f"[tvifm] {message}", flush=True)


def ensure_synth(cfg: Config) -> Path:
    """Generate SynthTri at ``cfg.data.root`` unless it is already there."""
    from tvifm.data.synth import generate

    root = Path(cfg.data.root)
    s = cfg.synth
    summary = generate(root, ids=s.ids, seed=s.seed, image_size=tuple(s.image_size))
    _say(f"SynthTri at {root}: {'reused' if summary.reused else 'generated'}")
    return root


def _finished(run_dir: Path, epochs: int) -> bool:
    meta_path = run_dir / META_FILE
    return meta_path.is_file() and read_json(meta_path).get("epochs_done", 0) >= epochs


def run_pipeline(cfg: Config) -> PipelineResult:
    """Run every stage of the embedded default and return the final evaluation report."""
    from tvifm.data.stats import format_stats, stats_for
    from tvifm.engine.evaluate import evaluate_run, format_results
    from tvifm.engine.trainer import train

    if cfg.data.dataset == "synth":
        ensure_synth(cfg)
    stats = stats_for(cfg.data.dataset, cfg.data.root, cfg.data.trial)
    _say("dataset statistics:\n" + format_stats(stats))
    out = Path(cfg.out_dir) / cfg.name
    base, joint = out / "base", out / "joint"
    if not _finished(base, cfg.base.epochs):
        _say(f"stage 1 (base) -> {base}")
        train(cfg, "base", base)
    if not _finished(joint, cfg.joint.epochs):
        _say(f"stage 2 (joint) -> {joint}")
        train(cfg, "joint", joint, init=base)
    report = evaluate_run(joint)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    _say("test results (%):\n" + format_results(report))
    return PipelineResult(Path(cfg.data.root), base, joint, stats, report)
