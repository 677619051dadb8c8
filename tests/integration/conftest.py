"""Shared fixtures of the integration tests: a local S3 server, a local Ray, small SynthTri datasets and
tiny fine-tuned captioners.

* ``s3_endpoint`` (session): moto's S3-compatible server on 127.0.0.1 (a random free port), reached over
  real HTTP; the AWS environment variables point boto3 and pyarrow at it while the session runs.
* ``s3_bucket``: a fresh, empty bucket per test.
* ``ray_local`` (session): ``ray.init(num_cpus=2, include_dashboard=False)``, shut down at the end. It
  starts after ``s3_endpoint`` so Ray's workers inherit the S3 environment.
* ``synth_small`` (session, read-only): SynthTri with 12 identities, 2 images per camera, 64x32.
  ``synth_copy``: a private copy of it that a test may modify.
* ``tiny_captioners`` (session): RGB and IR tiny BLIP captioners fine-tuned for 40 steps on
  ``synth_small`` (mechanics, not quality: enough that every caption has words, which the job requires),
  as ``{"visible": dir, "ir": dir}``;
  ``tiny_captioner_overrides``: the ``caption.*`` overrides of that very small BLIP;
  ``caption_job_overrides(*extra)``: overrides pointing the captioning job at ``tiny_captioners``.
* ``kill_session(sid)``: kill what is left of a process session the test started (a killed job's Ray).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SYNTH_IDS = 12
SYNTH_SIZE = (64, 32)
TINY_CAPTIONER = (
    "caption.image_size=32",
    "caption.patch_size=8",
    "caption.vision_width=32",
    "caption.vision_layers=1",
    "caption.text_width=32",
    "caption.text_layers=1",
    "caption.heads=2",
    "caption.vocab_size=150",
    "caption.max_length=40",
    "caption.steps=40",  # a few steps only give garbage, at times no word at all (a skipped image)
    "caption.batch_size=8",
    "caption.threads=1",
)
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    # moto accepts any key; a distinctive one lets tests check it never reaches a log
    "AWS_SECRET_ACCESS_KEY": f"test-secret-{uuid.uuid4().hex}",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


SERVE_TESTS = Path(__file__).parent / "serve"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the Ray Serve tests after every other test: their session-scoped deployment holds CPUs of
    the shared local Ray until the session ends, which would starve training and captioning workers."""
    serve = [item for item in items if SERVE_TESTS in Path(item.path).parents]
    if serve:
        others = [item for item in items if SERVE_TESTS not in Path(item.path).parents]
        items[:] = others + serve


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a local S3 server for the whole session (environment set for boto3 and pyarrow)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": url}.items():
            patch.setenv(key, value)
        patch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        yield url
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new empty bucket on the local S3 server; returns its name."""
    from tvifm.data import storage

    name = f"test-{uuid.uuid4().hex[:12]}"
    storage.s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_local(s3_endpoint: str) -> Iterator[None]:
    """A local Ray with 2 CPUs for the session, shut down at the end."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SynthTri (12 identities, 2 images per camera, 64x32); do not modify it, use synth_copy."""
    from tvifm.data.synth import generate

    root = tmp_path_factory.mktemp("synth-small") / "synthtri"
    generate(root, ids=SYNTH_IDS, seed=1, image_size=SYNTH_SIZE, images_per_cam=2, progress=False)
    return root


@pytest.fixture
def synth_copy(synth_small: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`synth_small` that the test may change."""
    return Path(shutil.copytree(synth_small, tmp_path / "synthtri"))


@pytest.fixture(scope="session")
def tiny_captioners(synth_small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny RGB and IR captioners fine-tuned for 40 steps on :func:`synth_small`."""
    from tvifm.captioning.finetune import finetune
    from tvifm.config import load_config

    out = tmp_path_factory.mktemp("captioners")
    cfg = load_config("tiny", [*TINY_CAPTIONER, f"caption.captioner_dir={out}"])
    return {r.modality: r.directory for r in finetune(str(synth_small), cfg, cfg.caption, progress=False)}


@pytest.fixture(scope="session")
def tiny_captioner_overrides() -> list[str]:
    """``caption.*`` overrides of a very small BLIP trained for 40 steps (fast mechanics tests)."""
    return list(TINY_CAPTIONER)


@pytest.fixture
def caption_job_overrides(tiny_captioners: dict[str, str]) -> Callable[..., list[str]]:
    """``caption_job_overrides(*extra)``: overrides pointing the job at :func:`tiny_captioners`."""

    def overrides(*extra: str) -> list[str]:
        return [
            f"caption.rgb_checkpoint={tiny_captioners['visible']}",
            f"caption.ir_checkpoint={tiny_captioners['ir']}",
            "caption.actors=2",
            "caption.infer_batch_size=4",
            "caption.part_size=8",
            *extra,
        ]

    return overrides


@pytest.fixture
def kill_session() -> Callable[[int], list[int]]:
    """``kill_session(sid)``: SIGKILL every process left in session ``sid`` (a killed job's Ray processes).

    Only processes of a session the test itself started with ``start_new_session=True`` are touched.
    """

    def kill(sid: int) -> list[int]:
        killed = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getsid(pid) == sid:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        return killed

    return kill
