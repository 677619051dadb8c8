"""The storage layer on local paths (S3 is tested against a local S3 server in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tvifm.data import storage


def test_write_read_exists_and_list(tmp_path: Path) -> None:
    target = storage.join(str(tmp_path), "a", "b", "x.bin")
    assert not storage.exists(target)
    storage.write_bytes(target, b"hello")
    assert storage.exists(target)
    assert storage.read_bytes(target) == b"hello"
    storage.write_bytes(storage.join(str(tmp_path), "a", "y.txt"), b"text")
    assert storage.list(str(tmp_path)) == [str(tmp_path / "a" / "b" / "x.bin"), str(tmp_path / "a" / "y.txt")]
    assert storage.list(str(tmp_path), suffix=".TXT") == [str(tmp_path / "a" / "y.txt")]
    assert storage.list(str(tmp_path / "missing")) == []


def test_atomic_write_leaves_no_temporary_file_and_listing_hides_dot_files(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    storage.write_bytes(target, b"1")
    storage.write_bytes(target, b"2")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    (tmp_path / ".out.json.partial.tmp").write_bytes(b"half")
    assert storage.list(str(tmp_path)) == [str(target)]


def test_open_text_and_binary(tmp_path: Path) -> None:
    uri = str(tmp_path / "notes" / "n.txt")
    with storage.open(uri, "w") as fh:
        fh.write("ünïcode line\n")
    with storage.open(uri, "r") as fh:
        assert fh.read() == "ünïcode line\n"
    with storage.open(uri, "rb") as fh:
        assert fh.read() == "ünïcode line\n".encode()


def test_failed_write_block_writes_nothing(tmp_path: Path) -> None:
    uri = str(tmp_path / "never.bin")
    with pytest.raises(RuntimeError), storage.open(uri, "wb") as fh:
        fh.write(b"partial")
        raise RuntimeError("boom")
    assert not storage.exists(uri)


def test_missing_file_and_bad_uris_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(storage.StorageError, match="no such file"):
        storage.read_bytes(tmp_path / "nope")
    with pytest.raises(storage.StorageError, match="no bucket"):
        storage.parse_s3("s3:///key")
    with pytest.raises(storage.StorageError, match="mode"):
        storage.open(str(tmp_path / "x"), "a")


def test_join_and_relative_for_both_kinds() -> None:
    assert storage.join("s3://bucket/root/", "Text", "x.json") == "s3://bucket/root/Text/x.json"
    assert storage.relative("s3://bucket/root/cam1/0001/0001.jpg", "s3://bucket/root") == "cam1/0001/0001.jpg"
    assert storage.parse_s3("s3://bucket/a/b") == storage.S3Location("bucket", "a/b")
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/s3://x")


def test_endpoint_resolution_prefers_argument_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert storage.endpoint_url() == "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:10")
    assert storage.endpoint_url() == "http://127.0.0.1:10"
    assert storage.endpoint_url("http://h:1") == "http://h:1"


def test_arrow_filesystem_reads_local_parquet(tmp_path: Path) -> None:
    uri = str(tmp_path / "t.parquet")
    pq.write_table(pa.table({"a": [1, 2]}), uri)
    fs, path = storage.arrow_filesystem(uri)
    assert pq.read_table(path, filesystem=fs).column("a").to_pylist() == [1, 2]


def test_tree_copy_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    storage.write_bytes(src / "m" / "config.json", b"{}")
    storage.write_bytes(src / "weights.bin", b"\x00\x01")
    storage.upload_tree(str(src), str(tmp_path / "copy"))
    assert storage.read_bytes(tmp_path / "copy" / "m" / "config.json") == b"{}"
    assert storage.download_tree(str(tmp_path / "copy"), tmp_path / "unused") == tmp_path / "copy"


HOSTILE_NAMES = {
    "/etc/passwd": "absolute",
    "a//etc/x": "empty segment",
    "a/../../outside": "'..'",
    "./x": "'.'",
    "a\\..\\x": "backslash",
    "a/b\x00c": "NUL",
    "": "empty",
}


@pytest.mark.parametrize("name", list(HOSTILE_NAMES), ids=list(HOSTILE_NAMES.values()))
def test_a_hostile_relative_name_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    with pytest.raises(storage.StorageError, match=HOSTILE_NAMES[name]) as err:
        storage.local_path(tmp_path, name)
    assert repr(name) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_plain_relative_name_maps_inside_the_folder(tmp_path: Path) -> None:
    assert storage.local_path(tmp_path, "cam1/0001/0001.jpg") == tmp_path / "cam1" / "0001" / "0001.jpg"
    assert storage.local_path(tmp_path, "..hidden-but-plain") == tmp_path / "..hidden-but-plain"


def test_a_symlink_inside_the_folder_cannot_lead_out(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(storage.StorageError, match="outside"):
        storage.local_path(tmp_path / "dest", "link/x.bin")
