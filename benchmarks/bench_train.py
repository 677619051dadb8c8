"""Training throughput (images/s) and peak memory of both stages for the tiny and paper presets on CPU.

Each (preset, stage) runs in its own subprocess so that its peak resident memory is its own. A step
is the real training step (forward of every stream, CE + WRT, backward, Adam) on one PK batch of
random images and real-length captions at the preset's input size. Images/s counts every image that
goes through the backbone (visible, channel-augmented visible and IR).

    python benchmarks/bench_train.py [--steps N] [--presets tiny paper] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from tvifm.experiments.docs import write_section

ROOT = Path(__file__).resolve().parents[1]

CAPTION = "a man with short black hair wearing a red short sleeve t - shirt, blue jeans pants and white shoes"


def _batch(cfg, n: int) -> dict:
    h, w = cfg.data.image_size
    return {
        "visible": torch.randn(n, 3, h, w),
        "visible_ca": torch.randn(n, 3, h, w),
        "ir": torch.randn(n, 3, h, w),
        "label": torch.arange(n) // cfg.data.images_per_modality,
        "visible_text": [CAPTION] * n,
        "ir_text": [CAPTION.replace("red ", "").replace("blue ", "").replace("white ", "")] * n,
    }


def measure(preset: str, stage: str, steps: int) -> dict:
    """Run ``steps`` timed training steps (after one warm-up step) in this process."""
    from tvifm.config import load_config
    from tvifm.engine.trainer import PlainRunner, stage_config
    from tvifm.losses import ReIDLoss
    from tvifm.models.tvifm import TVIFM

    cfg = load_config(preset)
    n = cfg.data.ids_per_batch * cfg.data.images_per_modality
    model = TVIFM(cfg.backbone, cfg.text, num_classes=cfg.data.ids_per_batch * 10)
    model.set_stage(stage)
    model.train()
    scfg = stage_config(cfg, stage)
    runner = PlainRunner(model, scfg, torch.device("cpu"), amp=False)
    loss_fn = ReIDLoss(scfg.loss)
    batch = _batch(cfg, n)
    streams = list(scfg.streams)

    def step() -> None:
        out = model(batch, streams)
        parts = loss_fn(out["features"], out["logits"], batch["label"].repeat(len(streams)))
        runner.step(parts["total"])

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    through_backbone = {"visible", "visible_ca", "ir"} & (
        set(streams) | ({"ir"} if "fusion" in streams else set())
    )
    images = n * len(through_backbone)
    return {
        "preset": preset,
        "stage": stage,
        "input": "x".join(map(str, cfg.data.image_size)),
        "batch_pairs": n,
        "backbone": cfg.backbone.arch,
        "text": cfg.text.arch,
        "step_s": seconds,
        "images_per_s": images / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


def run_child(preset: str, stage: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", preset, stage, "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| preset | stage | input | pairs/batch | backbone / text | s/step | images/s | peak RSS (MB) |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['stage']} | {r['input']} | {r['batch_pairs']} "
            f"| {r['backbone']} / {r['text']} | {r['step_s']:.3f} | {r['images_per_s']:.1f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    parser.add_argument("--child", nargs=2, metavar=("PRESET", "STAGE"), help=argparse.SUPPRESS)
    parser.add_argument("--no-docs", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.steps)))
        return
    rows = []
    for preset in args.presets:
        for stage in ("base", "joint"):
            steps = args.steps if preset == "tiny" else max(1, args.steps // 5)
            rows.append(run_child(preset, stage, steps))
            print(json.dumps(rows[-1]), flush=True)
    body = (
        "`python benchmarks/bench_train.py` runs the real training step (the preset's streams, CE + WRT,\n"
        "backward, Adam) of each preset on one PK batch of random images at the preset's input size,\n"
        "each in its own process (peak RSS is the process's own). Images/s counts the images through\n"
        "the backbone.\n\n"
        f"Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {rows[0]['threads']} threads, {date.today().isoformat()}.\n\n"
        f"{table(rows)}\n"
    )
    print(table(rows))
    if not args.no_docs:
        write_section(ROOT / "docs" / "benchmarks.md", "Training throughput", body)


if __name__ == "__main__":
    main()
