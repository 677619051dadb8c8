"""tvifm.experiments.loadtest: the load generator in its own process against a stub service, and the
in-process timings of a search and of a query's embedding."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tvifm.experiments import loadtest
from tvifm.tracking.server import free_port


class _Stub(BaseHTTPRequestHandler):
    """``POST /v1/search`` answers 200 when the body has a ``mode``, 422 otherwise."""

    seen: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(body)
        status = 200 if self.path == "/v1/search" and "mode" in body else 422
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"hits": []}' if status == 200 else b'{"detail": "no mode"}')

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """The in-process timings use one torch thread, as the replicas do; the test session gets its back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def stub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_load_generator_sends_every_request_from_another_process(stub_url: str, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"mode": "ir", "top_k": 3}))
    _Stub.seen.clear()
    out = loadtest.load_in_subprocess(stub_url, body, concurrency=3, requests=12)
    assert out["requests"] == 12 and out["errors"] == 0 and out["first_error"] is None
    assert 0 < out["p50_ms"] <= out["p99_ms"] and out["rps"] > 0
    assert len(_Stub.seen) == 12 and all(b == {"mode": "ir", "top_k": 3} for b in _Stub.seen)

    body.write_text(json.dumps({"top_k": 3}))
    out = loadtest.load_in_subprocess(stub_url, body, concurrency=1, requests=2)
    assert out["errors"] == 2 and out["first_error"].startswith("422")


def test_in_process_search_times_one_query_and_a_batch(torch_threads: None) -> None:
    out = loadtest.in_process_search(size=200, dim=16, repeat=2)
    assert set(out) == {"search_1_ms", "search_32_ms"} and all(v > 0 for v in out.values())


@pytest.mark.parametrize("mode", ["ir", "ensemble"])
def test_in_process_query_embeds_a_request_with_a_saved_model(
    small_synth: Path, tmp_path: Path, mode: str, torch_threads: None
) -> None:
    from tvifm.checkpoint import save_weights
    from tvifm.config import load_config
    from tvifm.data.registry import load_dataset
    from tvifm.data.sidecars import load_text_for
    from tvifm.models import RunDir, create_model

    cfg = load_config("tiny", ["text.context_length=48", "backbone.tiny_widths=[16, 16, 32, 32]"])
    run = RunDir(tmp_path / "model")
    run.save_config(cfg)
    save_weights(create_model(cfg.backbone, cfg.text, num_classes=4, seed=0), run.weights)
    run.write_meta({"stage": "joint", "num_classes": 4})
    splits = load_dataset("synth", small_synth)
    query = splits.test_query[0]
    caption = load_text_for(splits).caption(query).description
    body = {"mode": mode, "image": base64.b64encode(Path(query.path).read_bytes()).decode(),
            "description": caption, "ir_caption": caption}  # fmt: skip
    assert loadtest.in_process_query(run.path, body, repeat=1) > 0
