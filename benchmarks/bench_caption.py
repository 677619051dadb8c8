"""Captions per second: a plain single-process loop against the Ray Data job with 1 and 2 actors.

Same captioner, same images, one run each. Every contender uses one torch thread per worker (the loop
sets ``torch.set_num_threads(1)``, the job's actors ``caption.threads_per_actor=1``), so on 2 cores the
ideal is 1x for one actor and 2x for two. Ray is started once before timing (its start-up is not what
the comparison is about). Two rates per contender: end to end (the loop from loading the captioner, a
job from submitting it: worker processes, reading the manifest, actor start-up and model loading,
Parquet parts, sidecars, report) and steady (the loop after its first batch, a job once every actor has
written its first part, as ``report.json`` records it): what a long job over millions of images runs
at. Augmentation is off (``caption.augmenter=none``) because the loop does not augment.

Each job runs once per part size (``caption.part_size``: images per actor call and Parquet part; the
forward passes are ``--batch-size`` images in every contender), and everything is repeated for each
``--images`` count: a short job is dominated by the job's fixed start-up, a dataset-sized one by the
steady rate.

Usage::

    python benchmarks/bench_caption.py [--images 2400 22000] [--part-sizes 16 128] [--captioner DIR]
        [--work DIR] [--no-docs]

Without ``--captioner`` a tiny RGB captioner is fine-tuned briefly on a small generated SynthTri first
(the throughput of an untrained model would be meaningless: its captions have arbitrary length).
Results are printed and written to ``docs/benchmarks.md`` under ``## Captioning`` (other sections are
left intact).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvifm.experiments.docs import write_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "Captioning"


def _dataset(work: Path, images: int, seed: int = 0) -> Path:
    from tvifm.data.synth import generate

    ids = max(8, -(-images // 16))  # 4 visible cameras x 4 images per identity
    root = work / f"synth-{ids}" if seed == 0 else work / f"synth-{ids}-seed{seed}"
    generate(root, ids=ids, seed=seed, image_size=(64, 32), images_per_cam=(4, 1), progress=True)
    return root


def _captioner(work: Path, given: str | None) -> str:
    if given:
        return given
    from tvifm.captioning.entry import finetune_captioners

    out = work / "captioners"
    if not (out / "rgb" / "config.json").is_file():
        train = _dataset(work, 2400, seed=1)  # other people than the captioned images
        finetune_captioners(
            str(train), "tiny", ["caption.steps=150", f"caption.captioner_dir={out}"], ["visible"]
        )
    return str(out / "rgb")


def _visible_images(root: Path) -> list[dict[str, str]]:
    from tvifm.captioning.job import build_manifest

    return [r for r in build_manifest(str(root), "synth") if r["modality"] == "visible"]


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


def time_job(
    root: Path, captioner_dir: str, images: int, actors: int, part_size: int, batch_size: int, work: Path
) -> Timing:
    """The Ray Data job on the ``images`` visible images of ``root``, on a running Ray."""
    from tvifm.captioning.config import resolve_configs
    from tvifm.captioning.job import run_caption_job

    out = work / f"job-{images}-{actors}-{part_size}"
    shutil.rmtree(out, ignore_errors=True)
    overrides = [
        f"caption.rgb_checkpoint={captioner_dir}",
        "caption.modalities=[visible]",
        f"caption.actors={actors}",
        "caption.threads_per_actor=1",
        f"caption.infer_batch_size={batch_size}",
        f"caption.part_size={part_size}",
        "caption.augmenter=none",
        f"caption.output={out}",
    ]
    _, ccfg = resolve_configs("tiny", overrides)
    started = time.perf_counter()
    result = run_caption_job(str(root), ccfg, progress=False)
    counts = result.counts["visible"]
    if counts.captioned_now != images:
        raise RuntimeError(f"the job captioned {counts.captioned_now} of {images} images")
    return Timing(time.perf_counter() - started, counts.steady_images_per_second)


def _in_fresh_process(fn: Callable[..., Timing], *args: Any) -> Timing:
    """``fn(*args)`` in a new interpreter, so the loop pays its imports as every job's actors do."""
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(fn, *args).result()


@dataclass
class Run:
    """One contender on one image count."""

    images: int
    name: str
    part_size: int | None
    timing: Timing
    load: float


def _markdown(runs: list[Run], batch_size: int) -> str:
    loops = {r.images: r.timing for r in runs if r.part_size is None}

    def row(r: Run) -> str:
        loop, t = loops[r.images], r.timing
        return (
            f"| {r.images} | {r.name} | {r.part_size or '-'} | {t.seconds:.1f} | {r.images / t.seconds:.1f} "
            f"| {loop.seconds / t.seconds:.2f}x | {t.steady:.1f} | {t.steady / loop.steady:.2f}x "
            f"| {r.load:.1f} |"
        )

    return "\n".join(
        [
            "`python benchmarks/bench_caption.py` - tiny BLIP RGB captioner, SynthTri 64x32 visible images, "
            f"forward passes of {batch_size} images, one torch thread per worker, {os.cpu_count()} cores "
            f"({platform.machine()}), one run each, side by side. End to end: the loop from loading the "
            "captioner, a job from its submission to an already running Ray (worker processes, manifest "
            "read, actor start-up and model loading, Parquet parts, sidecars, report). Steady: the loop's "
            "rate after its first batch; a job's once every actor has written its first part, timed by "
            "when the parts were written (`report.json`). Part: images per actor call and "
            "Parquet part (`caption.part_size`). Load: the 1-min load average before the contender. "
            "Targets: >= 0.9x the loop with 1 actor, >= 1.6x with 2.",
            "",
            "| images | contender | part | end to end (s) | captions/s | vs loop | steady captions/s "
            "| vs loop | load |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *[row(r) for r in runs],
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2400, 22000])
    parser.add_argument("--part-sizes", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--captioner", help="captioner directory (default: fine-tune a tiny one)")
    parser.add_argument("--work", help="scratch directory (default: a temporary one)")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    import ray

    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        captioner = _captioner(work, args.captioner)
        datasets = {}
        for n in args.images:
            root = _dataset(work, n)
            rows = _visible_images(root)
            if len(rows) != n:
                raise SystemExit(f"use multiples of 16 images: {n} asked, the dataset has {len(rows)}")
            datasets[n] = root
            load = os.getloadavg()[0]
            timing = _in_fresh_process(time_loop, captioner, rows, args.batch_size)
            runs.append(Run(n, "single-process loop", None, timing, load))
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for n in args.images:
                for actors in (1, 2):
                    for part in args.part_sizes:
                        load = os.getloadavg()[0]
                        timing = time_job(datasets[n], captioner, n, actors, part, args.batch_size, work)
                        name = f"Ray Data, {actors} actor{'s' if actors > 1 else ''}"
                        runs.append(Run(n, name, part, timing, load))
                        print(_markdown(runs, args.batch_size).splitlines()[-1], flush=True)
        finally:
            ray.shutdown()
    runs.sort(key=lambda r: (r.images, r.part_size or 0, r.name))
    body = _markdown(runs, args.batch_size)
    print(body)
    print(json.dumps([{**vars(r), "timing": vars(r.timing)} for r in runs]))
    if not args.no_docs:
        write_section(REPO / "docs" / "benchmarks.md", SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
