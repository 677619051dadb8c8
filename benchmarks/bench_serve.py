"""Load-test the retrieval service over HTTP on loopback and time its search in process.

Usage::

    python benchmarks/bench_serve.py [--sizes 10000,100000] [--concurrency 1,8,32] [--requests 200]
                                     [--mode ensemble] [--quick] [--no-docs]

Deploys the service (tiny-preset model with random weights, gallery in a temporary folder) on a local
Ray with 2 CPUs, fills the gallery with random unit embeddings through the gallery index's internal bulk
path (``GalleryIndex.add_embeddings`` over a Serve handle, no images), and for every gallery size and
concurrency runs a bounded load test from a *second process* (``tvifm.experiments.loadtest``: asyncio +
httpx, ``--requests`` requests per level, at most 100 at concurrency 1) measuring p50/p99 latency and
requests/s of ``POST /v1/search``. In this process it also times the exact search (one query, and a
batch of 32 as ``@serve.batch`` forms under load) and the query encoding, to set HTTP end-to-end latency
against the work itself. A full run rewrites the ``## Serving`` section of ``docs/benchmarks.md``;
``--quick`` (10k gallery, 40 requests per level) only prints.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvifm.experiments import loadtest
from tvifm.experiments.docs import write_section

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
APP = "tvifm"


# --- setup ------------------------------------------------------------------------------------------------
def _make_model(out: Path) -> Path:
    """A run directory with the tiny preset's stage-2 model and random weights (8 identities)."""
    from tvifm.checkpoint import save_weights
    from tvifm.config import load_config
    from tvifm.models import RunDir, create_model

    cfg = load_config("tiny")
    run = RunDir(out)
    run.save_config(cfg)
    save_weights(create_model(cfg.backbone, cfg.text, num_classes=8, seed=0), run.weights)
    run.write_meta({"stage": "joint", "num_classes": 8})
    return out


def _query(tmp: Path, mode: str) -> dict[str, Any]:
    """A real SynthTri IR image with a witness description and its IR caption."""
    from tvifm.data.registry import load_dataset
    from tvifm.data.sidecars import all_samples, load_text_for
    from tvifm.data.synth import generate

    root = tmp / "synth"
    generate(root, ids=8, image_size=(96, 48), images_per_cam=(1, 1), progress=False, workers=1)
    splits = load_dataset("synth", root)
    text = load_text_for(splits)
    samples = all_samples(splits)
    ir = next(s for s in samples if s.modality == "ir")
    vis = next(s for s in samples if s.modality == "visible" and s.pid == ir.pid)
    return {
        "mode": mode,
        "image": base64.b64encode(Path(ir.path).read_bytes()).decode(),
        "description": text.caption(vis).description,
        "ir_caption": text.caption(ir).description,
        "top_k": 10,
    }


@dataclass
class Deployment:
    """The service under test."""

    url: str
    dim: int
    index: Any  # DeploymentHandle of GalleryIndex


def _deploy(tmp: Path, model: Path) -> Deployment:
    import ray
    from ray import serve

    from tvifm.serve.app import build_application
    from tvifm.serve.config import serve_config
    from tvifm.tracking.server import free_port

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
    cfg = serve_config(
        {
            "model": str(model),
            "gallery_uri": str(tmp / "gallery"),
            "max_batch_size": 16,
            "batch_wait_timeout_s": 0.005,
            "ingress": {"num_cpus": 0.25, "max_ongoing_requests": 64},
            # the load test is one client (one address) on purpose: let it have every upload place
            "max_uploads": 48,
            "max_uploads_per_client": 48,
            "embedder": {"num_cpus": 1.0, "max_ongoing_requests": 64},
            "index_num_cpus": 0.5,
        }
    )
    serve.run(build_application(cfg), name=APP, route_prefix="/")
    index = serve.get_deployment_handle("GalleryIndex", app_name=APP)
    info = serve.get_deployment_handle("Embedder", app_name=APP).model_info.remote().result()
    return Deployment(f"http://127.0.0.1:{port}", int(info["dim"]), index)


# --- report -----------------------------------------------------------------------------------------------
def machine(load: float | None) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    when = dt.date.today().isoformat()
    tail = f", 1-min load average {load:.1f} at the end of the run" if load is not None else ""
    versions = f"Python {platform.python_version()}, torch {torch.__version__}"
    return f"{os.cpu_count()} CPUs ({cpu}), {versions}, {when}{tail}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| gallery | concurrency | requests | p50 (ms) | p99 (ms) | requests/s | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']:,} | {r['concurrency']} | {r['requests']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['rps']:.1f} | {r['errors']} |"
        )
    return "\n".join(lines)


def search_table(search: dict[int, dict[str, float]], http: dict[int, float]) -> str:
    lines = [
        "| gallery | search, 1 query (ms) | search, 32 queries (ms) | HTTP p50, concurrency 1 (ms) |",
        "|---:|---:|---:|---:|",
    ]
    for size, s in search.items():
        lines.append(f"| {size:,} | {s['search_1_ms']:.2f} | {s['search_32_ms']:.2f} | {http[size]:.1f} |")
    return "\n".join(lines)


def section(report: dict[str, Any]) -> str:
    http1 = {r["size"]: r["p50_ms"] for r in report["rows"] if r["concurrency"] == 1}
    return (
        "`python benchmarks/bench_serve.py` deploys the retrieval service (`tvifm.serve`, three Serve\n"
        "deployments: ingress, embedder, gallery index; one replica each) on a local Ray with 2 CPUs and\n"
        f"load-tests `POST /v1/search` in `{report['mode']}` mode (one IR image of 96x48 as base64 JSON, a\n"
        "witness description and an IR caption, `top_k=10`) from a second process on loopback (asyncio +\n"
        "httpx). The model is the tiny preset with random weights (its speed does not depend on training;\n"
        f"embedding dimension {report['dim']}); the gallery holds random unit embeddings added through the\n"
        "gallery index's internal bulk path. Each ensemble query runs the IR image through the backbone and\n"
        "two texts through the CLIP text tower (`@serve.batch` up to 16, 5 ms wait), then one exact\n"
        "inner-product search (`@serve.batch`: concurrent queries share one matrix product).\n\n"
        f"Machine: {report['machine']}. The machine is shared with other jobs (noisy numbers).\n\n"
        f"{table(report['rows'])}\n\n"
        "In process, the same work without HTTP, Serve or batching (median; torch with 1 thread as in the\n"
        f"replicas): embedding one `{report['mode']}` query takes {report['query_ms']:.1f} ms; "
        "the exact search:\n\n"
        f"{search_table(report['search'], http1)}\n\n"
        f"Filling the gallery through the bulk path (persisted as segments in a local folder): "
        f"{report['fill']}.\n"
    )


# --- main -------------------------------------------------------------------------------------------------
def run(sizes: list[int], levels: list[int], requests: int, mode: str) -> dict[str, Any]:
    import ray
    from ray import serve

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmpdir:
        tmp = Path(tmpdir)
        model = _make_model(tmp / "model")
        body = _query(tmp, mode)
        body_file = tmp / "body.json"
        body_file.write_text(json.dumps(body))
        dep = _deploy(tmp, model)
        try:
            rows, fills, filled = [], [], 0
            for size in sizes:
                seconds = loadtest.fill_gallery(dep.index, dep.dim, filled, size)
                fills.append(f"{size - filled:,} embeddings in {seconds:.1f} s")
                filled = size
                loadtest.load_in_subprocess(dep.url, body_file, 2, 10)  # warm-up
                for c in levels:
                    n = min(requests, 100) if c == 1 else requests
                    result = loadtest.load_in_subprocess(dep.url, body_file, c, n)
                    rows.append({"size": size, "concurrency": c, **result})
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            serve.shutdown()
            ray.shutdown()
        search = {size: loadtest.in_process_search(size, dep.dim) for size in sizes}
        query_ms = loadtest.in_process_query(model, body)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "mode": mode,
        "dim": dep.dim,
        "rows": rows,
        "search": search,
        "query_ms": query_ms,
        "fill": "; ".join(fills),
        "machine": machine(load),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "load":  # the load generator alone (tvifm.experiments.loadtest)
        return loadtest.main(argv[1:], prog="bench_serve.py load")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="gallery sizes (comma-separated)")
    parser.add_argument("--concurrency", default="1,8,32", help="concurrency levels (comma-separated)")
    parser.add_argument("--requests", type=int, default=200, help="requests per level (at most 100 at c=1)")
    parser.add_argument("--mode", default="ensemble", choices=["ir", "text", "fusion", "ensemble"])
    parser.add_argument("--quick", action="store_true", help="10k gallery, 40 requests per level, no docs")
    parser.add_argument("--no-docs", action="store_true", help=f"do not rewrite {DOCS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    requests = 40 if args.quick else args.requests
    report = run(sizes, [int(c) for c in args.concurrency.split(",")], requests, args.mode)
    text = section(report)
    print("\n" + text)
    if not (args.quick or args.no_docs):
        write_section(DOCS, "Serving", text)
        print(f"wrote the benchmark section of {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
