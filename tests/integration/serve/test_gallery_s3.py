"""The persistent gallery on the local S3 server (real HTTP, boto3): round trip, compaction, stale model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tvifm.data import storage
from tvifm.serve.gallery import PersistentGallery, Record


def _unit(n: int, seed: int, dim: int = 6) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_gallery_round_trip_on_s3(s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/galleries/one"
    g = PersistentGallery(uri, 6, "m", max_segments=2)
    for s in range(3):
        records = [Record(f"s{s}-{i}", "visible" if i % 2 else "ir", {"s": s}) for i in range(4)]
        g.add(records, _unit(4, s), images=[f"{s}-{i}".encode() for i in range(4)])
    g.delete("s1-1")
    q = _unit(1, 42)[0]
    expected = g.search(q[None], "visible", 20)[0]

    again = PersistentGallery(uri, 6, "m")

    assert again.stats() == g.stats() and again.stats()["size"] == 11
    found = again.search(q[None], "visible", 20)[0]
    assert [h.id for h in found] == [h.id for h in expected]
    assert [h.score for h in found] == pytest.approx([h.score for h in expected], abs=1e-6)
    assert again.read_image(again.index.records["s2-3"].image) == b"2-3"
    listed = storage.list(uri)
    assert storage.join(uri, "manifest.json") in listed
    images = [u for u in listed if "/images/" in u]
    assert len(images) == 11  # the deleted item's image was removed
    stale = PersistentGallery(uri, 6, "another-model")
    assert stale.stale and stale.stats()["size"] == 11
