"""Load-testing the retrieval service (``benchmarks/bench_serve.py``): a bounded HTTP load generator meant
to run in its own process, and in-process timings of the work a search request does without HTTP, Serve
or batching.

The load generator is a command of its own, so that the service and its client do not share an
interpreter::

    python -m tvifm.experiments.loadtest --url URL --body FILE --concurrency C --requests N

prints one JSON summary (requests, p50/p99 latency in ms, requests/s, errors) of ``POST /v1/search``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tvifm


# --- the load generator ---------------------------------------------------------------------------------
async def load(url: str, body: dict[str, Any], concurrency: int, requests: int) -> dict[str, Any]:
    """``requests`` ``POST {url}/v1/search`` of ``body`` from ``concurrency`` concurrent clients."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    remaining = requests

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            response = await client.post(f"{url}/v1/search", json=body)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return summary(latencies, wall, errors)


def summary(latencies: Sequence[float], wall: float, errors: Sequence[str]) -> dict[str, Any]:
    """Requests, median and 99th-percentile latency (ms), requests/s over ``wall`` seconds, errors."""
    if not latencies:
        raise ValueError("no request was timed; a summary needs at least one latency")
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "requests": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * p99,
        "rps": len(ordered) / wall,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The load generator's command line: prints a JSON summary of one load level."""
    parser = argparse.ArgumentParser(prog=prog, description="Load-test POST /v1/search of a running service.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, type=Path)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    args = parser.parse_args(argv)
    body = json.loads(args.body.read_text())
    print(json.dumps(asyncio.run(load(args.url, body, args.concurrency, args.requests))))
    return 0


def load_in_subprocess(url: str, body_file: Path, concurrency: int, requests: int) -> dict[str, Any]:
    """:func:`load` run by :func:`main` in a second interpreter (with this ``tvifm`` importable)."""
    cmd = [sys.executable, "-m", "tvifm.experiments.loadtest", "--url", url, "--body", str(body_file)]
    cmd += ["--concurrency", str(concurrency), "--requests", str(requests)]
    package_root = str(Path(tvifm.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fill_gallery(index: Any, dim: int, start: int, stop: int, chunk: int = 10_000) -> float:
    """Add random unit embeddings ``r<start>..r<stop-1>`` to the visible gallery through the gallery
    index's internal bulk path (``index``: a Serve handle of ``GalleryIndex``); returns seconds taken."""
    import numpy as np

    rng = np.random.default_rng(start)
    began = time.perf_counter()
    for lo in range(start, stop, chunk):
        hi = min(stop, lo + chunk)
        emb = rng.standard_normal((hi - lo, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        result = index.add_embeddings.remote([f"r{i}" for i in range(lo, hi)], "visible", emb).result()
        if "error" in result:
            raise RuntimeError(result["error"])
    return time.perf_counter() - began


# --- in-process timings -----------------------------------------------------------------------------------
def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls after one warm-up call, in ms."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def in_process_search(size: int, dim: int, repeat: int = 30) -> dict[str, float]:
    """Median exact-search time of one query and of a batch of 32 over ``size`` random embeddings."""
    import torch
    import torch.nn.functional as F

    from tvifm.serve.gallery import EmbeddingIndex, Record

    torch.set_num_threads(1)  # as in the gallery-index replica (serve.index_threads)
    index = EmbeddingIndex(dim)
    emb = F.normalize(torch.randn(size, dim, generator=torch.Generator().manual_seed(0)), dim=1)
    index.put([Record(f"r{i}", "visible") for i in range(size)], emb, [(0, i) for i in range(size)])
    one, batch = F.normalize(torch.randn(1, dim), dim=1), F.normalize(torch.randn(32, dim), dim=1)
    return {
        "search_1_ms": median_ms(lambda: index.search(one, "visible", 10), repeat),
        "search_32_ms": median_ms(lambda: index.search(batch, "visible", 10), repeat),
    }


def in_process_query(model: str | Path, body: dict[str, Any], repeat: int = 20) -> float:
    """Median time (ms) to embed one search request ``body`` (``mode``, base64 ``image``,
    ``description``, ``ir_caption``) in process: decode, encode, and the model's query embedding."""
    import torch

    from tvifm.models import load_model
    from tvifm.models.query import MODE_NEEDS
    from tvifm.serve.encoder import Encoder, decode_image

    torch.set_num_threads(1)  # as in an embedding replica (serve.threads)
    loaded = load_model(model)
    enc = Encoder(loaded.model, loaded.info.image_size)
    data, needs = base64.b64decode(body["image"]), MODE_NEEDS[body["mode"]]

    def once() -> None:
        f = enc.image_features([decode_image(data, 10**8)], ["ir"])[0]
        texts = enc.text_features([body["description"], body["ir_caption"]]) if needs.description else None
        enc.query_embedding(body["mode"], f, *(texts if texts is not None else (None, None)))

    return median_ms(once, repeat)


if __name__ == "__main__":
    sys.exit(main())
