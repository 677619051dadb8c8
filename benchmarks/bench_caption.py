"""Captions per second: a plain single-process loop against the Ray Data job with 1 and 2 actors.

Same captioner, same images, one run each. Every contender uses one torch thread per worker (the loop
sets ``torch.set_num_threads(1)``, the job's actors ``caption.threads_per_actor=1``), so on 2 cores the
ideal is 1x for one actor and 2x for two. Ray is started once before timing (its start-up is not what
the comparison is about). Two rates per contender: end to end (the loop from loading the captioner, a
job from submitting it: worker processes, reading the manifest, actor start-up and model loading,
Parquet parts, sidecars, report) and steady (after the first batch, resp. the job's first written part,
as ``report.json`` records it): what a long job over millions of images runs at. Augmentation is off
(``caption.augmenter=none``) because the loop does not augment.

Usage::

    python benchmarks/bench_caption.py [--images 2400] [--captioner DIR] [--work DIR] [--no-docs]

Without ``--captioner`` a tiny RGB captioner is fine-tuned briefly on the generated SynthTri first (the
throughput of an untrained model would be meaningless: its captions have arbitrary length). Results are
printed and written to ``docs/benchmarks.md`` under ``## Captioning`` (other sections are left intact).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from docs_section import write_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "Captioning"


def _dataset(work: Path, images: int) -> Path:
    from tvifm.data.synth import generate

    ids = max(8, images // 16 + 1)  # 4 visible cameras x 4 images per identity
    root = work / f"synth-{ids}"
    generate(root, ids=ids, seed=0, image_size=(64, 32), images_per_cam=(4, 1), progress=True)
    return root


def _captioner(root: Path, work: Path, given: str | None) -> str:
    if given:
        return given
    from tvifm.captioning.entry import finetune_captioners

    out = work / "captioners"
    if not (out / "rgb" / "config.json").is_file():
        finetune_captioners(
            str(root), "tiny", ["caption.steps=150", f"caption.captioner_dir={out}"], ["visible"]
        )
    return str(out / "rgb")


def _visible_images(root: Path, limit: int) -> list[dict[str, str]]:
    from tvifm.captioning.job import build_manifest

    rows = [r for r in build_manifest(str(root), "synth") if r["modality"] == "visible"]
    return rows[:limit]


@dataclass
class Timing:
    """End-to-end seconds, and the steady rate after the first batch (images/s)."""

    seconds: float
    steady: float


def time_loop(captioner_dir: str, rows: list[dict[str, str]], batch_size: int) -> Timing:
    """One process captions ``rows`` (load the captioner, read, decode, caption), one torch thread."""
    import torch

    from tvifm.captioning.job import load_image
    from tvifm.captioning.model import load_captioner

    torch.set_num_threads(1)
    started = time.perf_counter()
    captioner = load_captioner(captioner_dir)
    first = 0.0
    for start in range(0, len(rows), batch_size):
        images = [load_image(r["uri"])[0] for r in rows[start : start + batch_size]]
        captioner.caption([im for im in images if im is not None])
        first = first or time.perf_counter()
    end = time.perf_counter()
    return Timing(end - started, (len(rows) - batch_size) / (end - first))


def time_job(root: Path, captioner_dir: str, actors: int, batch_size: int, work: Path) -> Timing:
    """The Ray Data job (visible images only) with ``actors`` actors, on a running Ray."""
    from tvifm.captioning.config import resolve_configs
    from tvifm.captioning.job import run_caption_job

    out = work / f"job-{actors}"
    shutil.rmtree(out, ignore_errors=True)
    overrides = [
        f"caption.rgb_checkpoint={captioner_dir}",
        "caption.modalities=[visible]",
        f"caption.actors={actors}",
        "caption.threads_per_actor=1",
        f"caption.infer_batch_size={batch_size}",
        "caption.augmenter=none",
        f"caption.output={out}",
    ]
    _, ccfg = resolve_configs("tiny", overrides)
    started = time.perf_counter()
    result = run_caption_job(str(root), ccfg, progress=False)
    return Timing(time.perf_counter() - started, result.counts["visible"].steady_images_per_second)


def _markdown(n: int, loop: Timing, jobs: dict[int, Timing], batch_size: int) -> str:
    def row(name: str, t: Timing) -> str:
        return (
            f"| {name} | {t.seconds:.1f} | {n / t.seconds:.1f} | {loop.seconds / t.seconds:.2f}x "
            f"| {t.steady:.1f} | {t.steady / loop.steady:.2f}x |"
        )

    rows = [row("single-process loop", loop)]
    rows += [row(f"Ray Data, {a} actor{'s' if a > 1 else ''}", t) for a, t in jobs.items()]
    return "\n".join(
        [
            "`python benchmarks/bench_caption.py` - tiny BLIP RGB captioner, SynthTri 64x32 visible images, "
            f"{n} images, batch {batch_size}, one torch thread per worker, {os.cpu_count()} cores "
            f"({platform.machine()}), 1-min load average {os.getloadavg()[0]:.1f} at the end (other work "
            "on the machine slows every contender), one run each. End to end: the loop from loading the "
            "captioner, a job from its submission to an already running Ray (worker processes, manifest "
            "read, actor start-up and model loading, Parquet parts, sidecars, report). Steady: the rate "
            "after the first batch (the job's first written part). Targets: >= 0.9x the loop with 1 "
            "actor, >= 1.6x with 2.",
            "",
            "| contender | end to end (s) | captions/s | vs loop | steady captions/s | vs loop |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--captioner", help="captioner directory (default: fine-tune a tiny one)")
    parser.add_argument("--work", help="scratch directory (default: a temporary one)")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        root = _dataset(work, args.images)
        captioner = _captioner(root, work, args.captioner)
        rows = _visible_images(root, args.images)
        loads = {"loop": os.getloadavg()[0]}
        loop = time_loop(captioner, rows, args.batch_size)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        jobs = {}
        try:
            for actors in (1, 2):
                loads[f"{actors} actors"] = os.getloadavg()[0]
                jobs[actors] = time_job(root, captioner, actors, args.batch_size, work)
        finally:
            ray.shutdown()
        if len(rows) != args.images:
            print(f"note: the dataset has {len(rows)} visible images", file=sys.stderr)
        body = _markdown(len(rows), loop, jobs, args.batch_size)
        body += "\n\n1-min load average before each contender: " + ", ".join(
            f"{name} {value:.1f}" for name, value in loads.items()
        )
    print(body)
    timings = {"loop": vars(loop), **{f"{a} actors": vars(t) for a, t in jobs.items()}}
    print(json.dumps({"images": len(rows), "timings": timings, "load": loads}))
    if not args.no_docs:
        write_section(REPO / "docs" / "benchmarks.md", SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
