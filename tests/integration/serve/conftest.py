"""Fixtures of the retrieval-service tests.

* ``serve_assets`` (session): a small SynthTri (8 identities, 64x32), two tvifm run directories with random
  weights of the tiny architecture (``model_a`` served, ``model_b`` for model-change tests) and a tiny
  randomly initialised BLIP IR captioner directory.
* ``serve_http`` (session): Serve started on the session's local Ray (``ray_local``) with its HTTP proxy on
  a free loopback port; shut down at the end of the session.
* ``service`` (session): ONE deployment of the service (auth on, small limits, IR captioner, gallery in a
  bucket of the local S3 server) shared by the test modules, with an authorised ``httpx`` client.
* ``deploy``: deploy another instance of the application (its own name and route prefix) and remove it
  at the end of the test.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

SESSION_APP = "session"  # not tvifm.serve.app.APP_NAME, which the jobs/serve.py tests deploy
IMAGE_SIZE = (64, 32)
MODEL_OVERRIDES = ["data.image_size=[64,32]", "backbone.tiny_widths=[16,16,32,32]", "text.context_length=32"]
TINY_BLIP = {
    "image_size": 32,
    "patch_size": 8,
    "vision_width": 32,
    "vision_layers": 1,
    "text_width": 32,
    "text_layers": 1,
    "heads": 2,
    "vocab_size": 150,
    "max_length": 20,
}
LIMITS = {
    "max_request_bytes": 200_000,
    "max_image_bytes": 20_000,
    "max_image_pixels": 40_000,
    "max_items_per_request": 16,
    "max_top_k": 100,
    "default_top_k": 5,
    "max_text_chars": 400,
    # the tests are one client (127.0.0.1) and send up to a dozen searches at once
    "max_uploads": 64,
    "max_uploads_per_client": 32,
}
SMALL_REPLICAS = {"ingress": {"num_cpus": 0.1}, "embedder": {"num_cpus": 0.2}, "index_num_cpus": 0.1}


@dataclass
class ServeAssets:
    """Inputs shared by the service tests."""

    synth: Path
    model_a: Path
    model_b: Path
    captioner: Path


def make_run_dir(path: Path, seed: int) -> Path:
    """A tvifm run directory of the tiny architecture with random weights (stage ``joint``)."""
    import torch

    from tvifm.checkpoint import save_weights, write_json
    from tvifm.config import load_config, save_config
    from tvifm.models.tvifm import TVIFM

    torch.manual_seed(seed)
    cfg = load_config("tiny", MODEL_OVERRIDES)
    save_config(cfg, path)
    save_weights(TVIFM(cfg.backbone, cfg.text, num_classes=4), path / "model.safetensors")
    write_json(path / "meta.json", {"stage": "joint", "num_classes": 4})
    return path


def make_captioner(path: Path, synth: Path) -> Path:
    """A tiny randomly initialised BLIP captioner whose tokenizer is trained on the SynthTri captions."""
    import torch

    from tvifm.captioning.config import caption_config
    from tvifm.captioning.model import build_tiny_captioner
    from tvifm.data.registry import load_dataset
    from tvifm.data.sidecars import all_samples, load_text_for

    splits = load_dataset("synth", synth)
    text = load_text_for(splits)
    captions = [c.description for s in all_samples(splits) if (c := text.caption(s)) is not None]
    torch.manual_seed(0)
    build_tiny_captioner(caption_config(TINY_BLIP), captions).save(path)
    return path


@pytest.fixture(scope="session")
def serve_assets(tmp_path_factory: pytest.TempPathFactory) -> ServeAssets:
    from tvifm.data.synth import generate

    base = tmp_path_factory.mktemp("serve")
    synth = base / "synthtri"
    generate(synth, ids=8, image_size=IMAGE_SIZE, images_per_cam=(2, 2), progress=False, workers=1)
    return ServeAssets(
        synth,
        make_run_dir(base / "model_a", seed=0),
        make_run_dir(base / "model_b", seed=1),
        make_captioner(base / "captioner", synth),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def serve_http(ray_local: None) -> Iterator[str]:
    """Serve's HTTP proxy on a free loopback port for the session; yields its base URL.

    Serve's proxy and replicas hold CPUs of the 2-CPU ``ray_local`` while it is up, so the serve tests
    run last (``tests/integration/conftest.py`` orders them) and the other tests get the whole Ray."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.fixture(scope="session")
def serve_bucket(s3_endpoint: str) -> str:
    """A bucket on the local S3 server for the service's galleries."""
    from tvifm.data import storage

    name = f"serve-{uuid.uuid4().hex[:10]}"
    storage.s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@dataclass
class Service:
    """A deployed instance of the service."""

    url: str
    token: str
    config: dict[str, Any]

    def client(self, token: str | None = "default") -> httpx.Client:
        """An HTTP client for the service (the right bearer token unless told otherwise)."""
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def wait_ready(url: str, timeout: float = 180) -> dict[str, Any]:
    """Poll ``/readyz`` until it answers 200; returns its body."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=30)
            last = (response.status_code, response.text)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError as err:
            last = err
        time.sleep(0.5)
    raise AssertionError(f"{url} did not become ready: {last}")


def token_file(token: str, folder: Path) -> str:
    """A private file in ``folder`` holding ``token`` (as a Kubernetes Secret mounted into a pod would)."""
    path = Path(tempfile.mkdtemp(prefix="token-", dir=folder)) / "token"
    path.write_text(token)
    path.chmod(0o600)
    return str(path)


def run_app(config: dict[str, Any], name: str, prefix: str, token: str, folder: Path) -> None:
    """Deploy the application of ``config`` under ``name`` at ``prefix``; the ingress replicas read the
    bearer token from a private file in ``folder`` (``serve.auth_token_file``), never through Ray."""
    from ray import serve

    from tvifm.serve.app import build_application
    from tvifm.serve.config import serve_config

    settings = serve_config({**config, "auth_token_file": token_file(token, folder)})
    serve.run(build_application(settings), name=name, route_prefix=prefix)


def service_config(assets: ServeAssets, gallery_uri: str, **extra: Any) -> dict[str, Any]:
    """The service settings the tests deploy with."""
    return {
        "model": str(assets.model_a),
        "gallery_uri": gallery_uri,
        "ir_captioner": str(assets.captioner),
        "max_batch_size": 8,
        "batch_wait_timeout_s": 0.01,
        **LIMITS,
        **SMALL_REPLICAS,
        **extra,
    }


@pytest.fixture(scope="session")
def service(
    serve_http: str, serve_assets: ServeAssets, serve_bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The session's deployment of the service (gallery on the local S3 server)."""
    from ray import serve

    token = secrets.token_urlsafe(16)
    config = service_config(serve_assets, f"s3://{serve_bucket}/gallery")
    run_app(config, SESSION_APP, "/", token, tmp_path_factory.mktemp("token"))
    wait_ready(serve_http)
    try:
        yield Service(serve_http, token, config)
    finally:
        serve.delete(SESSION_APP)


@pytest.fixture
def deploy(serve_http: str, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """``deploy(config, name)``: another instance at ``/<name>``; removed when the test ends."""
    from ray import serve

    names: list[str] = []
    token = secrets.token_urlsafe(16)

    def start(config: dict[str, Any], name: str, wait: bool = True) -> Service:
        run_app(config, name, f"/{name}", token, tmp_path)
        names.append(name)
        url = f"{serve_http}/{name}"
        if wait:
            wait_ready(url)
        return Service(url, token, config)

    yield start
    for name in dict.fromkeys(names):
        serve.delete(name)
