"""The gallery of the retrieval service on a local folder: exact search, upsert/delete, persistence,
compaction, stale-model detection and a second writer (S3 is covered in tests/integration/serve)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tvifm.serve.gallery import (
    ConcurrentWriteError,
    GalleryError,
    PersistentGallery,
    Record,
    StaleGalleryError,
    UnknownItemError,
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
    assert segments == {f"{s['seq']:08d}{x}" for s in manifest["segments"] for x in (".json", ".safetensors")}
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
