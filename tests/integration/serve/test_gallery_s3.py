"""The persistent gallery on the local S3 server (real HTTP, boto3): round trip, compaction, stale model,
conditional manifest writes, a refused second writer that must not clobber, check and repair."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tvifm.data import storage
from tvifm.serve.gallery import (
    ConcurrentWriteError,
    CorruptGalleryError,
    PersistentGallery,
    Record,
    check_gallery,
    repair_gallery,
)


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


def _objects(uri: str) -> set[str]:
    return {e.uri for e in storage.list_entries(uri)}


def test_conditional_writes_on_the_s3_server(s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/cas/manifest.json"
    storage.check_conditional_writes(f"s3://{s3_bucket}/cas")  # the local S3 server enforces them
    first = storage.write_if(uri, b"v1", None)
    with pytest.raises(storage.WriteConflictError):
        storage.write_if(uri, b"other", None)
    read = storage.read_versioned(uri)
    assert read is not None and (read.data, read.tag) == (b"v1", first)
    storage.write_if(uri, b"v2", first)
    with pytest.raises(storage.WriteConflictError):
        storage.write_if(uri, b"stale", first)
    assert storage.read_bytes(uri) == b"v2" and _objects(f"s3://{s3_bucket}/cas") == {uri}


def test_a_refused_writer_leaves_the_other_writers_change_intact_on_s3(s3_bucket: str) -> None:
    # issue 22, finding 1, on object storage: the refused writer used to overwrite the other's segment
    uri = f"s3://{s3_bucket}/galleries/race"
    service = PersistentGallery(uri, 6, "m")
    service.add([Record("a0", "visible")], _unit(1, 0), images=[b"a0"])
    other = PersistentGallery(uri, 6, "m")
    other.add([Record("b0", "visible", {"by": "other"})], _unit(1, 1), images=[b"other"])
    objects = _objects(uri)

    with pytest.raises(ConcurrentWriteError, match="another writer"):
        service.add([Record("s0", "visible"), Record("s1", "ir")], _unit(2, 2), images=[b"s0", b"s1"])

    assert _objects(uri) == objects
    again = PersistentGallery(uri, 6, "m")
    assert set(again.index.records) == {"a0", "b0"}
    assert again.read_image(again.index.records["b0"].image) == b"other"
    assert check_gallery(uri, grace_s=0).ok
    assert service.refresh()
    service.add([Record("s0", "visible")], _unit(1, 2))
    assert set(PersistentGallery(uri, 6, "m").index.records) == {"a0", "b0", "s0"}


def test_check_and_repair_on_s3(s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/galleries/repair"
    g = PersistentGallery(uri, 6, "m")
    g.add([Record("a0", "visible"), Record("a1", "ir")], _unit(2, 0), images=[b"a0", b"a1"])
    g.add([Record("b0", "visible")], _unit(1, 1), images=[b"b0"])
    storage.write_bytes(storage.join(uri, "images", "crashed", "000000"), b"left by a killed writer")
    first = g.manifest["segments"][0]["id"]
    storage.delete(storage.join(uri, "segments", f"{first}.json"))

    with pytest.raises(CorruptGalleryError, match=f"segment {first}: its json file is missing"):
        PersistentGallery(uri, 6, "m")
    report = check_gallery(uri, grace_s=0)
    assert not report.ok and "images/crashed/000000" in report.orphans

    repaired = repair_gallery(uri, grace_s=0)

    assert repaired.ok and repaired.orphans == [] and repaired.items == 1
    again = PersistentGallery(uri, 6, "m")
    assert set(again.index.records) == {"b0"} and again.read_image(again.index.records["b0"].image) == b"b0"
    assert len([u for u in _objects(uri) if "/images/" in u]) == 1
