"""Conditional writes (compare-and-swap on one file), listings with hidden files and folder pruning on
local storage; the S3 side is tested against the local S3 server in tests/integration/serve."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tvifm.data import storage


def test_write_if_creates_only_a_missing_file_and_replaces_only_the_version_read(tmp_path: Path) -> None:
    uri = str(tmp_path / "m.json")
    assert storage.read_versioned(uri) is None
    first = storage.write_if(uri, b"v1", None)
    with pytest.raises(storage.WriteConflictError, match="another writer"):
        storage.write_if(uri, b"other", None)
    read = storage.read_versioned(uri)
    assert read is not None and read.data == b"v1" and read.tag == first
    second = storage.write_if(uri, b"v2", first)
    with pytest.raises(storage.WriteConflictError):
        storage.write_if(uri, b"stale", first)
    assert storage.read_bytes(uri) == b"v2" and storage.read_versioned(uri).tag == second  # type: ignore[union-attr]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.json.lock", "m.json"]  # no temporary file left


def test_of_writers_racing_from_the_same_version_exactly_one_wins(tmp_path: Path) -> None:
    uri = str(tmp_path / "m.json")
    start = storage.write_if(uri, b"start", None)
    barrier, won, lost = threading.Barrier(8), [], []

    def race(n: int) -> None:
        barrier.wait()
        try:
            storage.write_if(uri, f"writer {n}".encode(), start)
            won.append(n)
        except storage.WriteConflictError:
            lost.append(n)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    assert storage.read_bytes(uri) == f"writer {won[0]}".encode()


def test_list_entries_sees_hidden_files_and_empty_folders_are_pruned(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / ".half.tmp").write_bytes(b"xx")
    (tmp_path / "c" / "d").mkdir(parents=True)
    entries = storage.list_entries(str(tmp_path))
    assert [(Path(e.uri).name, e.size) for e in entries] == [(".half.tmp", 2)]
    assert entries[0].modified > 0
    assert storage.list_entries(str(tmp_path / "missing")) == []
    storage.remove_empty_folders(str(tmp_path / "a"))
    storage.remove_empty_folders(str(tmp_path / "c"))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/.half.tmp"]
