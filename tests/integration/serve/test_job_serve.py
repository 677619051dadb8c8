"""``jobs/serve.py``: starts a local Ray, deploys, prints the URL, serves, and stops cleanly on Ctrl-C.

(Named to run before the modules that start the session's Serve deployment, so the job's own local Ray
does not start next to a busy one.)"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import ServeAssets
from serve_reference import Synth

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_line(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"no {marker!r} in the job output: {''.join(seen)[-2000:]}")


def test_job_serves_until_interrupted(
    serve_assets: ServeAssets, tmp_path: Path, kill_session: Callable[[int], list[int]]
) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [
        sys.executable,
        "jobs/serve.py",
        "--address",
        "local",
        "--num-cpus",
        "2",
        f"serve.model={serve_assets.model_a}",
        f"serve.gallery_uri={tmp_path / 'gallery'}",
        f"serve.port={port}",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        line = _wait_for_line(proc, "ready at", timeout=300)
        url = f"http://127.0.0.1:{port}"
        assert url in line
        assert httpx.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
        assert httpx.get(f"{url}/v1/model", timeout=30).json()["source"] == "checkpoint"
        image = base64.b64encode(Path(Synth.load(serve_assets.synth).of("ir")[0].path).read_bytes()).decode()
        response = httpx.post(
            f"{url}/v1/search", json={"mode": "fusion", "image": image, "description": "a man"}, timeout=60
        )
        assert response.status_code == 422 and "no IR captioner is configured" in response.json()["detail"]

        proc.send_signal(signal.SIGINT)
        _wait_for_line(proc, "service stopped", timeout=120)
        assert proc.wait(timeout=120) == 0
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/healthz", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_session(proc.pid)
