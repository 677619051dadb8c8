"""The issue-22 reproduction through the service: another process commits a change to the gallery a
running service holds, then the service is sent a 2-image multipart add. The add is refused with 503
without touching the other writer's change, the service reloads the gallery, and the retry is stored
next to it (gallery on the local S3 server)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import ServeAssets, Service, service_config
from serve_reference import Synth

from tvifm.serve.gallery import PersistentGallery, Record, check_gallery

pytestmark = pytest.mark.slow


def test_a_write_racing_another_writer_is_refused_then_retried(
    deploy: Callable[..., Service], serve_assets: ServeAssets, serve_bucket: str, s3_endpoint: str
) -> None:
    synth = Synth.load(serve_assets.synth)
    first, second = synth.of("visible", (1,))[:2]
    uri = f"s3://{serve_bucket}/writers"
    svc = deploy(service_config(serve_assets, uri, ir_captioner=None), "writers")
    files = [
        ("images", (f"{n}.jpg", Path(p.path).read_bytes(), "image/jpeg"))
        for n, p in ((0, first), (1, second))
    ]
    data = {"ids": ["svc-0", "svc-1"], "modality": ["visible", "visible"]}
    with svc.client() as client:
        model = client.get("/v1/model").json()
        stats = client.get("/v1/gallery/stats").json()
        other = PersistentGallery(uri, stats["dim"], model["fingerprint"], endpoint=s3_endpoint)
        other.add([Record("other", "ir", {"by": "other"})], torch.ones(1, stats["dim"]), images=[b"other"])

        refused = client.post("/v1/gallery", files=files, data=data)
        assert refused.status_code == 503 and "another writer" in refused.json()["detail"]
        assert set(PersistentGallery(uri, stats["dim"], model["fingerprint"]).index.records) == {"other"}

        retried = client.post("/v1/gallery", files=files, data=data)
        assert retried.status_code == 200, retried.text
        assert client.get("/v1/gallery/stats").json()["size"] == 3

    stored = PersistentGallery(uri, stats["dim"], model["fingerprint"])
    assert set(stored.index.records) == {"other", "svc-0", "svc-1"}
    assert stored.read_image(stored.index.records["other"].image) == b"other"
    assert check_gallery(uri).ok
