"""Step time of the plain single-process loop against Ray Train + DeepSpeed with 1 and 2 workers.

The same stage-1 run (tiny preset, the same PK global batch, a small SynthTri) is trained three ways in
one invocation, each in its own process so that memory is its own:

* ``plain``: :func:`tvifm.engine.trainer.train` in this process (``cpus`` torch threads);
* ``ray+ds x1``: ``run_stage`` with one Ray Train worker (``cpus`` threads), DeepSpeed ZeRO-2 on gloo;
* ``ray+ds x2``: two workers of ``cpus // 2`` threads, each on half of the identities of every batch.

Step time is the median over the timed epochs (the first epoch is a warm-up) of the epoch's training
time divided by its batches; validation and checkpointing are outside it. Peak memory is the peak RSS of
the process that trains (rank 0 for Ray; the ranks are symmetric). Overhead = ray+ds x1 / plain - 1;
scaling efficiency = plain / (2 x ray+ds x2).

    python benchmarks/bench_dist.py [--epochs N] [--batches N] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from tvifm.experiments.docs import write_section

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {"plain": 0, "ray+ds x1": 1, "ray+ds x2": 2}
EXPLAIN = (
    "On one 2-core machine the plain loop already uses both cores (2 intra-op threads), so two "
    "1-thread workers can only gain from better per-thread efficiency minus the gloo all-reduce of "
    "the gradients; the scaling that matters is across machines or GPUs, one worker each."
)


def _config(root: Path, out: Path, workers: int, epochs: int, batches: int):
    from tvifm.config import load_config

    cpus = os.cpu_count() or 2
    return load_config(
        "tiny",
        [
            f"data.root={root}",
            f"base.epochs={epochs}",
            f"base.batches_per_epoch={batches}",
            "base.warmup_epochs=0",
            f"base.eval_every={epochs + 1}",
            "eval.val_trials=1",
            f"dist.num_workers={max(workers, 1)}",
            f"dist.cpus_per_worker={max(cpus // max(workers, 1), 1)}",
            "dist.zero_stage=2",
            f"dist.storage_path={out / 'ray'}",
            f"dist.run_name=bench{workers}",
        ],
    )


def measure(setup: str, root: Path, epochs: int, batches: int) -> dict:
    """Train in this process (``plain``) or through Ray Train; returns step time and peak RSS."""
    import torch

    workers = SETUPS[setup]
    out = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    cfg = _config(root, out, workers, epochs, batches)
    if workers == 0:
        from tvifm.engine.trainer import train

        torch.set_num_threads(cfg.dist.cpus_per_worker)
        history = [log.__dict__ for log in train(cfg, "base", out / "plain", progress=False).history]
    else:
        from tvifm.cluster import ray_session
        from tvifm.engine.distributed import run_stage
        from tvifm.models.run import RunDir

        with ray_session(os.cpu_count() or 2, ""):
            outcome = run_stage(cfg, "base")
        history = RunDir(outcome.run_uri).history()
    timed = history[1:] or history
    step_s = statistics.median(h["seconds"] / batches for h in timed)
    images = statistics.median(h["images"] for h in timed) / batches  # per rank and step
    return {
        "setup": setup,
        "workers": max(workers, 1),
        "threads": cfg.dist.cpus_per_worker,
        "step_s": step_s,
        "images_per_s": images * max(workers, 1) / step_s,
        "peak_rss_mb": max(h.get("peak_rss_mb", 0.0) for h in history),
        "loss_last": history[-1]["losses"]["total"],
    }


def run_child(setup: str, root: Path, epochs: int, batches: int) -> dict:
    cmd = [sys.executable, __file__, "--child", setup, str(root), "--epochs", str(epochs)]
    cmd += ["--batches", str(batches)]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{setup} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    plain = rows[0]["step_s"]
    lines = [
        "| setup | workers x threads | s/step | images/s | vs plain | peak RSS per worker (MB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setup']} | {r['workers']} x {r['threads']} | {r['step_s']:.3f} | {r['images_per_s']:.1f} "
            f"| {plain / r['step_s']:.2f}x | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per setup (the first is a warm-up)")
    parser.add_argument("--batches", type=int, default=12, help="batches per epoch")
    parser.add_argument("--ids", type=int, default=48, help="SynthTri identities")
    parser.add_argument("--child", nargs=2, metavar=("SETUP", "ROOT"), help=argparse.SUPPRESS)
    parser.add_argument("--no-docs", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], Path(args.child[1]), args.epochs, args.batches)))
        return
    from tvifm.config import load_config
    from tvifm.data.synth import generate

    tiny = load_config("tiny")
    root = Path(tempfile.mkdtemp(prefix="bench-dist-synth-")) / "synthtri"
    generate(root, ids=args.ids, image_size=tuple(tiny.data.image_size), progress=False)
    rows = []
    for setup in SETUPS:
        rows.append(run_child(setup, root, args.epochs, args.batches))
        print(json.dumps(rows[-1]), flush=True)
    plain, one, two = (r["step_s"] for r in rows)
    summary = (
        f"Ray Train + DeepSpeed overhead with 1 worker: {100 * (one / plain - 1):+.1f}% step time "
        f"(target: at most +10%). 2 workers: {plain / two:.2f}x the plain loop's throughput, scaling "
        f"efficiency {100 * plain / (2 * two):.0f}% on {os.cpu_count()} cores. Last-epoch loss: plain "
        f"{rows[0]['loss_last']:.6f}, 1 worker {rows[1]['loss_last']:.6f} (the same step), 2 workers "
        f"{rows[2]['loss_last']:.6f} (triplet mining within each rank's half of the batch)."
    )
    body = (
        "`python benchmarks/bench_dist.py` trains the same stage-1 run (tiny preset, "
        f"{tiny.data.image_size[0]}x{tiny.data.image_size[1]} input, PK batch of "
        f"{tiny.data.ids_per_batch} identities x {tiny.data.images_per_modality} images per modality, "
        f"SynthTri with {args.ids} identities) three ways, each in its own process: the plain loop, Ray "
        "Train + DeepSpeed ZeRO-2 (gloo, fp32) with 1 worker, and with 2 workers splitting every batch's "
        f"identities. {args.epochs} epochs of {args.batches} batches; s/step is the median over epochs "
        "after the first of training time / batches (validation and checkpoints excluded); images/s "
        "counts the images through the backbone over all workers; peak RSS is the training process's "
        "own (rank 0).\n\n"
        f"Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"{date.today().isoformat()}.\n\n"
        f"{table(rows)}\n\n{summary} {EXPLAIN}\n"
    )
    print(table(rows))
    print(summary)
    if not args.no_docs:
        write_section(ROOT / "docs" / "benchmarks.md", "Distributed training", body)


if __name__ == "__main__":
    main()
