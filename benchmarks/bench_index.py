"""Benchmark the gallery index types (exact, IVF, HNSW) on a large gallery, in process.

Usage: ``python benchmarks/bench_index.py [--size 1000000] [--queries 500] [--threads 2]
[--kinds exact,ivf,hnsw] [--nprobe 64,512,1024] [--ef-search 512,96,256] [--no-docs]``

Builds one gallery modality's index (``tvifm.serve.vectors.Shard``, the service's code) per
``serve.index`` type and measures build time, memory, recall@10 against exact search and the p50/p99
of single-query searches, each search setting on the same index. The embeddings have the tiny preset
model's dimension and a re-identification gallery's structure: 10 images per identity, unit vectors
around random identity centres (``--spread`` 1.0: two images of one person at cosine ~0.5, as the
trained tiny model scores true matches, docs/serving.md "Score thresholds"); queries are new images of
random identities. A full run rewrites the ``## Gallery index`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tvifm.config import load_config
from tvifm.experiments.docs import write_section
from tvifm.models import create_model
from tvifm.serve.vectors import IndexSpec, Shard, brute_force, set_threads

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
K = 10
PREVIOUS = "exact, previous (torch matmul + topk)"


def tiny_dim() -> int:
    """The embedding dimension of the tiny preset's model (the embedded default)."""
    cfg = load_config("tiny")
    return int(create_model(cfg.backbone, cfg.text, num_classes=2, seed=0).dim)


def gallery(size: int, queries: int, dim: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings of ``size`` gallery images (10 per identity) and of ``queries`` new images."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, size // 10), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def images(who: np.ndarray) -> np.ndarray:
        x = centres[who] + float(spread / np.sqrt(dim)) * rng.standard_normal((len(who), dim), np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return images(np.arange(size) % len(centres)), images(rng.integers(0, len(centres), queries))


def memory_mb(shard: Shard) -> float:
    """The index's memory (MB): the gallery's float32 matrix plus faiss's vectors, ids and links."""
    total = shard.cols.matrix.nbytes
    ann = shard.cols.ann
    if ann is not None and shard.spec.kind == "ivf":
        index = ann.index
        total += index.ntotal * (index.code_size + 8) + index.nlist * index.d * 4
    elif ann is not None:
        hnsw = ann.index.hnsw
        total += ann.index.ntotal * ann.index.d * 4 + 4 * hnsw.neighbors.size() + 8 * hnsw.offsets.size()
        total += 4 * hnsw.levels.size()
    return total / 2**20


def latencies(search: Any, queries: np.ndarray) -> np.ndarray:
    """Wall time (ms) of each single-query search after one warm-up."""
    out = [search(queries[:1])]
    for i in range(len(queries)):
        out.append(time.perf_counter())
        search(queries[i : i + 1])
    return 1000 * np.diff([*out[1:], time.perf_counter()])


def row(name: str, build_s: float, memory: float, lat: np.ndarray, recall: float) -> dict[str, Any]:
    p99 = float(np.sort(lat)[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))])
    return {"index": name, "build_s": build_s, "memory_mb": memory, "recall": recall,
            "p50_ms": float(np.median(lat)), "p99_ms": p99}  # fmt: skip


def recall_at_k(shard: Shard, queries: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the exact top-``K`` rows that the shard's search finds (ids are ``r<row>``)."""
    found = [shard.search(queries[i : i + 1], K)[0] for i in range(len(queries))]
    pairs = zip(found, truth.tolist(), strict=True)
    return float(np.mean([len({int(h[1:]) for h, _ in f} & set(t)) / K for f, t in pairs]))


def _label(shard: Shard) -> str:
    spec = shard.spec
    if spec.kind == "ivf":
        return f"ivf (nlist {shard.cols.ann.index.nlist}, nprobe {spec.nprobe})"
    if spec.kind == "hnsw":
        return f"hnsw (M {spec.hnsw_m}, efConstruction {spec.ef_construction}, efSearch {spec.ef_search})"
    return "exact"


def measure(args: argparse.Namespace, dim: int) -> list[dict[str, Any]]:
    """A row per index type and search setting (``--nprobe``, ``--ef-search``: the same index searched
    wider); built on ``--threads`` threads, searched on one (``serve.index_threads``' default, as in
    the gallery-index replica)."""
    import torch

    size, threads = args.size, args.threads
    x, q = gallery(size, args.queries, dim, args.spread)
    set_threads(threads)
    truth = brute_force(q, x, K)[1]
    ids = [f"r{i}" for i in range(size)]
    set_threads(1)
    xt = torch.from_numpy(x)
    previous = latencies(lambda one: torch.topk(torch.from_numpy(one) @ xt.t(), K, dim=1), q)
    rows = [row(PREVIOUS, 0.0, x.nbytes / 2**20, previous, 1.0)]
    searches = {
        "exact": [{}],
        "ivf": [{"nprobe": int(n)} for n in args.nprobe.split(",")],
        "hnsw": [{"ef_search": int(n)} for n in args.ef_search.split(",")],
    }
    for kind in args.kinds.split(","):
        spec = IndexSpec(kind=kind, min_items=1, **searches[kind][0])  # type: ignore[arg-type]
        set_threads(threads)
        start = time.perf_counter()
        shard = Shard(dim, spec)
        shard.append(ids, x, [{}] * size)
        shard.maintain()
        build = time.perf_counter() - start
        set_threads(1)
        for setting in searches[kind]:
            if shard.cols.ann is not None:  # search-time settings of the same index
                shard.spec = shard.cols.ann.spec = replace(spec, **setting)
            lat = latencies(lambda one, s=shard: s.search(one, K), q)
            rows.append(row(_label(shard), build, memory_mb(shard), lat, recall_at_k(shard, q, truth)))
            print(rows[-1], flush=True)
    return rows


COLUMNS = (
    "| index | build (s) | memory (MB) | recall@10 | p50 (ms) | p99 (ms) |\n|---|---:|---:|---:|---:|---:|"
)
ROW = "| {index} | {build_s:.1f} | {memory_mb:.0f} | {recall:.3f} | {p50_ms:.2f} | {p99_ms:.2f} |"


def table(rows: list[dict[str, Any]]) -> str:
    return "\n".join([COLUMNS, *(ROW.format(**r) for r in rows)])


def section(rows: list[dict[str, Any]], args: argparse.Namespace, dim: int, load: float) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    head = commit.stdout.strip()
    what = (
        f"`python benchmarks/bench_index.py --size {args.size}` (commit {head}): one gallery "
        f"modality of {args.size:,} unit embeddings of dimension {dim} (the tiny preset model's), 10 per "
        f"identity around random identity centres (spread {args.spread}: two images of one person at cosine "
        f"~0.5), {args.queries} single-query searches for the top {K} with new images of random identities, "
        "in process through `tvifm.serve.vectors.Shard`. Build: filling the index and `maintain()` (IVF "
        f"k-means training and adding, HNSW graph construction) on {args.threads} threads; searches on one "
        "thread (`serve.index_threads`, as in the gallery-index replica). Memory: the gallery's float32 "
        "matrix plus faiss's vectors, ids and links. Recall@10 against exact search. The first row is the "
        "search the faiss index replaced (torch matrix product and `topk` over the same matrix, one thread). "
        "Each row names its settings; the others are the `serve.index_*` defaults."
    )
    machine = (
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
        f"{dt.date.today()}; shared with other jobs (1-min load average {load:.1f} at the end), so latencies "
        "are noisy and builds slower than on an idle machine."
    )
    return f"{textwrap.fill(what, 105)}\n\n{textwrap.fill(machine, 105)}\n\n{table(rows)}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kinds", default="exact,ivf,hnsw", help="index types (comma-separated)")
    parser.add_argument("--nprobe", default="64,512,1024", help="IVF lists searched (comma-separated)")
    parser.add_argument("--ef-search", default="512,96,256", help="HNSW candidate lists (comma-separated)")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    dim = tiny_dim()
    rows = measure(args, dim)
    text = section(rows, args, dim, os.getloadavg()[0])
    print("\n" + text)
    if not args.no_docs:
        write_section(DOCS, "Gallery index", text)
        print(f"wrote the Gallery index section of {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
