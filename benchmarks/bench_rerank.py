"""Time k-reciprocal re-ranking (tvifm.eval.rerank) at SYSU-MM01 test scale and print a markdown table.

    python benchmarks/bench_rerank.py [--dims 128,2048] [--gallery 301,3010] [--queries 3803]

3,803 IR queries against a single-shot all-search gallery (301 images: 96 identities x their cameras)
and a multi-shot one (up to 10 per identity and camera, about 3,010). Features are clustered unit vectors,
so the neighbour sets have the size real ones have; the time does not depend on their values otherwise.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from tvifm.eval.rerank import k_reciprocal_rerank


def _features(rng: np.random.Generator, n: int, dim: int, ids: int) -> np.ndarray:
    centres = rng.normal(size=(ids, dim))
    x = centres[rng.integers(0, ids, size=n)] + rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=_ints, default=[128, 2048])
    parser.add_argument("--gallery", type=_ints, default=[301, 3010])
    parser.add_argument("--queries", type=int, default=3803)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| queries | gallery | dim | plain cosine (s) | re-ranked (s) | peak RSS (MB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for gallery_size in args.gallery:
        for dim in args.dims:
            query = _features(rng, args.queries, dim, 96)
            gallery = _features(rng, gallery_size, dim, 96)
            start = time.perf_counter()
            _ = 1 - query @ gallery.T
            plain = time.perf_counter() - start
            start = time.perf_counter()
            k_reciprocal_rerank(query, gallery)
            reranked = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"| {args.queries} | {gallery_size} | {dim} | {plain:.3f} | {reranked:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
