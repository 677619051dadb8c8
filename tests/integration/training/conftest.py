"""Fixtures of the training-system tests: a real ``ray start --head`` cluster, a real ``mlflow server``
and small job configurations. Every process started here is stopped here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tvifm.tracking.server import LocalMlflowServer, free_port

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent


def job_env(**extra: str) -> dict[str, str]:
    """Environment for Ray CLI calls and job drivers: the venv first on PATH, token auth as the cluster."""
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        **extra,
    }


@pytest.fixture
def cli_env() -> Callable[..., dict[str, str]]:
    """``cli_env(**extra)``: the environment for Ray CLI calls and job drivers (see :func:`job_env`)."""
    return job_env


@pytest.fixture(scope="module")
def ray_head_dir() -> str:
    """The temporary folder (sessions, logs) of the module's :func:`ray_head`."""
    return tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths have a length limit


@pytest.fixture(scope="module")
def ray_head(ray_head_dir: str, s3_endpoint: str) -> Iterator[str]:
    """A Ray head started with ``ray start --head --block`` on loopback; yields the dashboard address.

    It starts after the S3 server, so its processes (and the jobs they run) inherit the S3 settings and
    credentials from their environment, as on a cluster, and no job has to pass them along."""
    temp = ray_head_dir
    dash = free_port()
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head", f"--port={free_port()}", f"--dashboard-port={dash}",
        "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        "--include-dashboard=true", "--disable-usage-stats", "--block", f"--temp-dir={temp}",
        # the job agent's fixed default port (52365) may be held by the session's local Ray
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
    ]  # fmt: skip
    log = open(Path(temp) / "head.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=job_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_for(f"{address}/api/version", proc, timeout=180)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _wait_for(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as exc:
            if getattr(exc, "code", None) in (401, 403):  # up, but wants the token: good enough
                return
        time.sleep(1)
    raise RuntimeError(f"{url} did not come up within {timeout} s")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite, local artifacts) on loopback for the module."""
    with LocalMlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server.uri


@pytest.fixture
def job_overrides(synth_small: Path, tmp_path: Path) -> Callable[..., list[str]]:
    """``job_overrides(*extra)``: a two-stage job on ``synth_small`` that takes seconds per epoch."""

    def overrides(*extra: str) -> list[str]:
        return [
            f"data.root={synth_small}",
            "data.image_size=[64, 32]",
            "data.ids_per_batch=4",
            "data.images_per_modality=2",
            "backbone.tiny_widths=[16, 16, 32, 32]",
            "text.context_length=48",
            "base.epochs=2",
            "base.warmup_epochs=0",
            "base.batches_per_epoch=2",
            "joint.epochs=2",
            "joint.warmup_epochs=0",
            "joint.batches_per_epoch=2",
            "base.eval_every=1",
            "joint.eval_every=1",
            "eval.trials=1",
            "eval.val_trials=1",
            "dist.cpus_per_worker=1",
            f"dist.storage_path={tmp_path / 'ray'}",
            f"tracking.local_root={tmp_path / 'mlflow'}",
            f"out_dir={tmp_path / 'runs'}",  # the job's log file goes under out_dir
            *extra,
        ]

    return overrides
