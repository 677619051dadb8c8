"""Secrets never reach Ray's logs (Ray writes runtime environments and deployment configs there, in files
any local user may read): the API's bearer token, given as a file the way a mounted Kubernetes Secret
gives it, or by ``jobs/serve.py`` to a cluster it did not start, and the S3 credentials the replicas use.
After each service has answered authenticated requests, every file of the Ray session's folder is
searched for them."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import SMALL_REPLICAS, ServeAssets, service_config, wait_ready
from serve_reference import Synth

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def _session_dir() -> Path:
    import ray

    return Path(ray._private.worker._global_node.get_session_dir_path())  # no public accessor in Ray 2.60


def _files_holding(folder: Path, needles: dict[str, str]) -> list[str]:
    """``"<file>: <what>"`` for every file below ``folder`` that contains one of the ``needles``."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{path}: {what}" for what, value in needles.items() if value.encode() in data]
    return found


def _image(assets: ServeAssets) -> bytes:
    return Path(Synth.load(assets.synth).of("visible")[0].path).read_bytes()


def test_a_token_file_and_the_s3_credentials_stay_out_of_every_ray_log(
    serve_http: str, serve_assets: ServeAssets, serve_bucket: str, tmp_path: Path
) -> None:
    from ray import serve

    from tvifm.serve.app import build_app

    token = f"tok-{secrets.token_hex(16)}"
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o600)
    args = service_config(
        serve_assets, f"s3://{serve_bucket}/secrets", auth_token_file=str(tmp_path / "token")
    )
    # what a RayService does with its serveConfigV2: the builder and its args
    serve.run(build_app(args), name="secret-file", route_prefix="/secret-file")
    url = f"{serve_http}/secret-file"
    try:
        wait_ready(url)
        assert httpx.get(f"{url}/v1/gallery/stats", timeout=60).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        files = {"images": ("a.jpg", _image(serve_assets), "image/jpeg")}
        added = httpx.post(f"{url}/v1/gallery", headers=auth, files=files, data={"ids": "a"}, timeout=120)
        assert added.status_code == 200, added.text  # the index wrote the gallery to S3 with the credentials
        assert httpx.get(f"{url}/v1/gallery/stats", headers=auth, timeout=60).json()["size"] == 1
    finally:
        serve.delete("secret-file")
    needles = {"bearer token": token, "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]}
    assert not _files_holding(_session_dir(), needles)


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
    raise AssertionError(f"no {marker!r} in the job output: {''.join(seen)[-3000:]}")


def test_jobs_serve_on_a_running_cluster_hands_the_token_over_outside_ray(
    serve_http: str, serve_assets: ServeAssets, tmp_path: Path, kill_session: Callable[[int], list[int]]
) -> None:
    """The replicas of a cluster ``jobs/serve.py`` did not start do not see its environment: the token
    in ``serve.auth_token_env`` reaches them, but not through a Ray runtime environment."""
    import ray

    token = f"tok-{secrets.token_hex(16)}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["TVIFM_CLI_TOKEN"] = token
    scaling = [
        f"serve.{k}.num_cpus={v['num_cpus']}" for k, v in SMALL_REPLICAS.items() if isinstance(v, dict)
    ]
    cmd = [
        sys.executable, "jobs/serve.py", "--address", ray.get_runtime_context().gcs_address,
        f"serve.model={serve_assets.model_a}", f"serve.gallery_uri={tmp_path / 'gallery'}",
        f"serve.port={serve_http.rsplit(':', 1)[1]}", "serve.route_prefix=/cli",
        "serve.auth_token_env=TVIFM_CLI_TOKEN", f"serve.index_num_cpus={SMALL_REPLICAS['index_num_cpus']}",
        *scaling,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_line(proc, "ready at", timeout=300)
        url = f"{serve_http}/cli"
        assert httpx.get(f"{url}/v1/model", timeout=60).status_code == 401
        answer = httpx.get(f"{url}/v1/model", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert answer.status_code == 200, answer.text
        proc.send_signal(signal.SIGINT)
        _wait_for_line(proc, "service stopped", timeout=120)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_session(proc.pid)
    assert not _files_holding(_session_dir(), {"bearer token": token})
