"""The gallery of the retrieval service on a local folder: exact search, upsert/delete, persistence,
compaction, stale-model detection, a second writer that must not clobber, the consistency check on load,
``check_gallery``/``repair_gallery`` and orphan collection (S3 is covered in tests/integration/serve; kill -9
and concurrent processes in tests/integration/test_gallery_writers.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save as save_tensors

from tvifm.serve.gallery import (
    FORMAT,
    ConcurrentWriteError,
    CorruptGalleryError,
    GalleryError,
    PersistentGallery,
    Record,
    StaleGalleryError,
    UnknownItemError,
    check_gallery,
    repair_gallery,
)

DIM = 8


def _unit(n: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed)), dim=1)


def _records(prefix: str, n: int, modality: str = "visible") -> list[Record]:
    return [Record(f"{prefix}{i}", modality, {"n": i}) for i in range(n)]


def _ranking(
    gallery: PersistentGallery, query: torch.Tensor, modality: str = "visible", k: int = 100
) -> list:
    return [(h.id, round(h.score, 5)) for h in gallery.search(query[None], modality, k)[0]]


def _brute_force(ids: list[str], emb: torch.Tensor, query: torch.Tensor) -> list[str]:
    scores = emb @ query
    return [ids[i] for i in torch.argsort(scores, descending=True).tolist()]


def test_search_is_exact_and_per_modality(tmp_path: Path) -> None:
    g = PersistentGallery(str(tmp_path / "g"), DIM, "model-a")
    vis, ir = _unit(40, 0), _unit(10, 1)
    g.add(_records("v", 40), vis)
    g.add(_records("i", 10, "ir"), ir)
    q = _unit(1, 2)[0]
    hits = g.search(q[None], "visible", 40)[0]
    assert [h.id for h in hits] == _brute_force([f"v{i}" for i in range(40)], vis, q)
    assert [h.score for h in hits] == pytest.approx(sorted((vis @ q).tolist(), reverse=True), abs=1e-6)
    assert {h.id for h in g.search(q[None], "ir", 100)[0]} == {f"i{i}" for i in range(10)}
    assert hits[0].metadata == {"n": int(hits[0].id[1:])}
    assert g.stats()["by_modality"] == {"visible": 40, "ir": 10}


def test_upsert_replaces_and_delete_removes(tmp_path: Path) -> None:
    g = PersistentGallery(str(tmp_path / "g"), DIM, "m")
    emb = _unit(5, 0)
    g.add(_records("a", 5), emb)
    replaced = g.add([Record("a2", "ir", {"new": True})], _unit(1, 9))
    assert replaced == ["a2"]
    assert g.stats()["by_modality"] == {"visible": 4, "ir": 1}
    assert "a2" not in [h.id for h in g.search(emb[2][None], "visible", 10)[0]]
    g.delete("a0")
    with pytest.raises(UnknownItemError, match="a0"):
        g.delete("a0")
    q = _unit(1, 3)[0]
    rest = [1, 3, 4]
    assert [h.id for h in g.search(q[None], "visible", 10)[0]] == _brute_force(
        [f"a{i}" for i in rest], emb[rest], q
    )


def test_reload_restores_exactly_the_same_gallery(tmp_path: Path) -> None:
    uri = str(tmp_path / "g")
    g = PersistentGallery(uri, DIM, "m")
    g.add(_records("a", 30), _unit(30, 0), images=[f"img{i}".encode() for i in range(30)])
    g.add(_records("b", 5, "ir"), _unit(5, 1))
    g.add([Record("a7", "visible", {"v": 2})], _unit(1, 5))
    g.delete("a3")
    q = _unit(1, 7)[0]
    before = (_ranking(g, q), _ranking(g, q, "ir"), g.stats())

    again = PersistentGallery(uri, DIM, "m")

    assert (_ranking(again, q), _ranking(again, q, "ir"), again.stats()) == before
    assert again.index.records["a7"].metadata == {"v": 2}
    assert again.read_image(again.index.records["a5"].image) == b"img5"


def test_compaction_keeps_content_and_removes_dead_files(tmp_path: Path) -> None:
    uri = tmp_path / "g"
    g = PersistentGallery(str(uri), DIM, "m", max_segments=3)
    for s in range(4):
        g.add(_records(f"s{s}-", 4), _unit(4, s), images=[b"x"] * 4)
    assert g.stats()["segments"] == 1  # the 4th segment triggered a compaction
    for i in range(4):
        g.delete(f"s0-{i}")
    g.delete("s1-0")
    assert g.stats()["dead_rows"] <= g.stats()["size"]
    q = _unit(1, 9)[0]
    expected = _ranking(g, q)
    segments = {p.name for p in (uri / "segments").iterdir()}
    manifest = json.loads((uri / "manifest.json").read_text())
    assert segments == {f"{s['id']}{x}" for s in manifest["segments"] for x in (".json", ".safetensors")}
    assert len(list((uri / "images").rglob("*"))) - len(list((uri / "images").glob("*"))) == g.stats()["size"]
    assert _ranking(PersistentGallery(str(uri), DIM, "m"), q) == expected


def test_a_gallery_of_another_model_is_stale_until_rebuilt(tmp_path: Path) -> None:
    uri = str(tmp_path / "g")
    g = PersistentGallery(uri, DIM, "model-a")
    g.add(_records("a", 3), _unit(3, 0), images=[b"1", b"2", b"3"])

    other = PersistentGallery(uri, 4, "model-b")
    assert other.stale and other.stats()["fingerprint"] == "model-a"
    with pytest.raises(StaleGalleryError, match="model-a"):
        other.search(torch.zeros(1, 4), "visible", 1)
    with pytest.raises(StaleGalleryError):
        other.add(_records("x", 1), torch.zeros(1, 4))
    records = [rec for rec, _ in other.index.items()]
    new = F.normalize(torch.randn(3, 4), dim=1)
    other.apply(other.persist_rebuild(records, new, "model-b"))

    rebuilt = PersistentGallery(uri, 4, "model-b")
    assert not rebuilt.stale and rebuilt.stats()["dim"] == 4 and rebuilt.stats()["size"] == 3
    top = rebuilt.search(new[1][None], "visible", 1)[0][0]
    assert top.id == records[1].id and rebuilt.read_image(rebuilt.index.records[top.id].image) == b"2"


def test_an_empty_gallery_adopts_the_served_model(tmp_path: Path) -> None:
    uri = str(tmp_path / "g")
    g = PersistentGallery(uri, DIM, "model-a")
    g.add(_records("a", 1), _unit(1, 0))
    g.delete("a0")
    other = PersistentGallery(uri, 4, "model-b")
    assert not other.stale
    other.add(_records("b", 1), torch.ones(1, 4) / 2)
    assert PersistentGallery(uri, 4, "model-b").stats()["fingerprint"] == "model-b"


def test_a_second_writer_is_detected(tmp_path: Path) -> None:
    uri = str(tmp_path / "g")
    first = PersistentGallery(uri, DIM, "m")
    second = PersistentGallery(uri, DIM, "m")
    first.add(_records("a", 2), _unit(2, 0))
    with pytest.raises(ConcurrentWriteError, match="another writer"):
        second.add(_records("b", 2), _unit(2, 1))
    assert PersistentGallery(uri, DIM, "m").stats()["size"] == 2


def test_bad_input_and_damaged_storage_give_clear_errors(tmp_path: Path) -> None:
    uri = tmp_path / "g"
    g = PersistentGallery(str(uri), DIM, "m")
    with pytest.raises(GalleryError, match="more than once"):
        g.add([Record("x", "visible"), Record("x", "visible")], _unit(2, 0))
    with pytest.raises(GalleryError, match="shape"):
        g.add(_records("a", 2), torch.zeros(2, DIM + 1))
    uri.mkdir()
    (uri / "manifest.json").write_text("{not json")
    with pytest.raises(GalleryError, match="damaged"):
        PersistentGallery(str(uri), DIM, "m")


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _content(uri: str) -> dict[str, tuple[dict, bytes | None]]:
    g = PersistentGallery(uri, DIM, "m")
    return {
        rec.id: (rec.metadata, g.read_image(rec.image) if rec.image else None)
        for rec in g.index.records.values()
    }


def test_a_refused_writer_leaves_the_other_writers_change_intact(tmp_path: Path) -> None:
    # issue 22, finding 1: the stale writer used to reuse the other writer's segment number and overwrite it
    uri = tmp_path / "g"
    service = PersistentGallery(str(uri), DIM, "m")
    service.add([Record("a0", "visible", {"by": "service"})], _unit(1, 0), images=[b"a0"])
    other = PersistentGallery(str(uri), DIM, "m")
    other.add([Record("b0", "visible", {"by": "other"})], _unit(1, 1), images=[b"b0"])
    files = _files(uri)

    with pytest.raises(ConcurrentWriteError, match="another writer"):
        service.add([Record("s0", "visible"), Record("s1", "ir")], _unit(2, 2), images=[b"s0", b"s1"])

    assert _files(uri) == files  # nothing of the refused change is left behind
    assert _content(str(uri)) == {"a0": ({"by": "service"}, b"a0"), "b0": ({"by": "other"}, b"b0")}
    assert check_gallery(str(uri), grace_s=0).ok


def test_a_refused_writer_catches_up_and_its_retry_keeps_both_changes(tmp_path: Path) -> None:
    uri = str(tmp_path / "g")
    first, second = PersistentGallery(uri, DIM, "m"), PersistentGallery(uri, DIM, "m")
    first.add(_records("a", 2), _unit(2, 0))
    with pytest.raises(ConcurrentWriteError):
        second.add(_records("b", 1), _unit(1, 1))
    assert second.refresh() and set(second.index.records) == {"a0", "a1"}
    second.add(_records("b", 1), _unit(1, 1))
    second.delete("a0")
    with pytest.raises(ConcurrentWriteError):
        first.add(_records("c", 1), _unit(1, 2))
    assert set(PersistentGallery(uri, DIM, "m").index.records) == {"a1", "b0"}


def test_refresh_keeps_the_state_when_another_model_owns_the_stored_gallery(tmp_path: Path) -> None:
    uri = str(tmp_path / "g")
    old = PersistentGallery(uri, DIM, "model-a")
    old.add(_records("a", 2), _unit(2, 0), images=[b"1", b"2"])
    new = PersistentGallery(uri, 4, "model-b")
    new.apply(new.persist_rebuild([rec for rec, _ in new.index.items()], torch.ones(2, 4) / 2, "model-b"))
    with pytest.raises(ConcurrentWriteError):
        old.add(_records("x", 1), _unit(1, 1))
    assert old.refresh() is False
    assert not old.stale and old.stats()["fingerprint"] == "model-a" and len(old.index) == 2


def _damage_count(seg: Path, manifest: dict) -> None:
    manifest["segments"][0]["count"] += 1


def _damage_digest(seg: Path, manifest: dict) -> None:
    items = json.loads((seg.with_suffix(".json")).read_text())
    items["items"][0]["metadata"] = {"tampered": True}
    seg.with_suffix(".json").write_text(json.dumps(items))


def _damage_missing(seg: Path, manifest: dict) -> None:
    seg.with_suffix(".safetensors").unlink()


def _damage_rows(seg: Path, manifest: dict) -> None:  # a file with more rows than its item list
    seg.with_suffix(".safetensors").write_bytes(save_tensors({"embeddings": torch.zeros(3, DIM)}))
    manifest["segments"][0].pop("sha256")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_damage_count, "the manifest says 3 rows"),
        (_damage_digest, "SHA-256"),
        (_damage_missing, "safetensors file is missing"),
        (_damage_rows, "3 embeddings"),
    ],
    ids=["count", "digest", "missing", "rows"],
)
def test_an_inconsistent_gallery_is_refused_on_load_and_repaired(
    tmp_path: Path, damage: object, problem: str
) -> None:
    uri = tmp_path / "g"
    g = PersistentGallery(str(uri), DIM, "m")
    g.add(_records("a", 2), _unit(2, 0), images=[b"a0", b"a1"])
    g.add(_records("b", 2), _unit(2, 1), images=[b"b0", b"b1"])
    manifest = json.loads((uri / "manifest.json").read_text())
    damage(uri / "segments" / f"{manifest['segments'][0]['id']}.json", manifest)  # type: ignore[operator]
    (uri / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(CorruptGalleryError, match=problem) as refused:
        PersistentGallery(str(uri), DIM, "m")
    assert f"tvifm gallery repair --uri {uri}" in str(refused.value)
    report = check_gallery(str(uri))
    assert not report.ok and any(problem in p for p in report.problems)

    repaired = repair_gallery(str(uri), grace_s=0)

    assert repaired.ok and repaired.orphans == [] and repaired.recent == [] and repaired.items == 2
    assert any(problem in line for line in repaired.repaired)
    assert _content(str(uri)) == {"b0": ({"n": 0}, b"b0"), "b1": ({"n": 1}, b"b1")}
    assert not (uri / "images" / manifest["segments"][0]["id"]).exists()  # the dropped segment's images


def test_repair_keeps_an_item_whose_stored_image_is_missing(tmp_path: Path) -> None:
    uri = tmp_path / "g"
    g = PersistentGallery(str(uri), DIM, "m")
    g.add(_records("a", 2), _unit(2, 0), images=[b"a0", b"a1"])
    (uri / g.index.records["a1"].image).unlink()
    report = check_gallery(str(uri))
    assert not report.ok and report.problems == [f"stored image {g.index.records['a1'].image} is missing"]
    assert repair_gallery(str(uri)).ok
    assert _content(str(uri)) == {"a0": ({"n": 0}, b"a0"), "a1": ({"n": 1}, None)}


def test_orphans_older_than_the_grace_period_are_collected_by_compaction_and_repair(tmp_path: Path) -> None:
    # issue 22, finding 5: files of a write killed before its commit used to stay forever
    uri = tmp_path / "g"
    g = PersistentGallery(str(uri), DIM, "m", orphan_grace_s=600)
    g.add(_records("a", 2), _unit(2, 0), images=[b"a0", b"a1"])
    keep = _files(uri)
    leftovers = ["images/dead0001/000000", "segments/dead0001.safetensors", "segments/.x.json.abc.tmp"]
    for rel in [*leftovers, ".manifest.json.abc.tmp", "images/young/000000"]:
        (uri / rel).parent.mkdir(parents=True, exist_ok=True)
        (uri / rel).write_bytes(b"partial")
    old = time.time() - 3600
    for rel in [*leftovers, ".manifest.json.abc.tmp"]:
        os.utime(uri / rel, (old, old))

    report = check_gallery(str(uri), grace_s=600)
    assert report.ok and report.orphans == sorted([*leftovers, ".manifest.json.abc.tmp"])
    assert report.recent == ["images/young/000000"]
    g.compact()
    assert check_gallery(str(uri), grace_s=600).orphans == []
    assert (uri / "images/young/000000").exists() and not (uri / "images/dead0001").exists()
    repaired = repair_gallery(str(uri), grace_s=0)
    assert repaired.ok and repaired.recent == [] and repaired.orphans == []
    assert {f for f in _files(uri) if not f.startswith("segments/")} == {
        f for f in keep if not f.startswith("segments/")
    }
    assert len(PersistentGallery(str(uri), DIM, "m").index) == 2


def test_a_manifest_that_cannot_be_read_is_left_alone_by_repair(tmp_path: Path) -> None:
    uri = tmp_path / "g"
    PersistentGallery(str(uri), DIM, "m").add(_records("a", 1), _unit(1, 0), images=[b"a0"])
    (uri / "manifest.json").write_text("{not json")
    files = _files(uri)
    report = repair_gallery(str(uri), grace_s=0)
    assert (
        not report.ok and "damaged" in report.problems[0] and report.repaired[0].startswith("nothing changed")
    )
    assert _files(uri) == files


def test_a_format_1_gallery_is_read_and_rewritten_with_digests(tmp_path: Path) -> None:
    uri = tmp_path / "g"
    (uri / "segments").mkdir(parents=True)
    emb = _unit(2, 0)
    (uri / "segments" / "00000000.safetensors").write_bytes(save_tensors({"embeddings": emb}))
    items = [{"id": f"a{i}", "modality": "visible", "metadata": {}, "image": None} for i in range(2)]
    (uri / "segments" / "00000000.json").write_text(json.dumps({"items": items}))
    legacy = {"format": "tvifm-gallery/1", "version": 3, "fingerprint": "m", "dim": DIM, "next_seq": 1,
              "segments": [{"seq": 0, "count": 2, "dead": [1]}], "updated_at": "x"}  # fmt: skip
    (uri / "manifest.json").write_text(json.dumps(legacy))

    g = PersistentGallery(str(uri), DIM, "m")
    assert set(g.index.records) == {"a0"} and check_gallery(str(uri)).ok
    g.add(_records("b", 1), _unit(1, 1))

    manifest = json.loads((uri / "manifest.json").read_text())
    assert manifest["format"] == FORMAT and manifest["version"] == 4
    assert all(set(s["sha256"]) == {"json", "safetensors"} for s in manifest["segments"])
    assert set(PersistentGallery(str(uri), DIM, "m").index.records) == {"a0", "b0"}


@pytest.mark.parametrize(
    "manifest",
    [
        {"format": FORMAT, "version": 1, "fingerprint": "m", "segments": []},
        {"format": FORMAT, "version": 1, "fingerprint": "m", "dim": DIM, "segments": [{"count": 1}]},
        {"format": "tvifm-gallery/1", "version": 1, "fingerprint": "m", "dim": DIM, "segments": [{"n": 0}]},
    ],
    ids=["no-dim", "segment-without-id", "legacy-without-seq"],
)
def test_a_malformed_manifest_is_refused_with_a_clear_error(tmp_path: Path, manifest: dict) -> None:
    uri = tmp_path / "g"
    uri.mkdir()
    (uri / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptGalleryError, match=r"malformed.*damaged"):
        PersistentGallery(str(uri), DIM, "m")
