"""Storage and the captioning job against a local S3-compatible server over real HTTP."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tvifm.captioning.job import build_manifest, run_caption_job
from tvifm.config import load_config
from tvifm.data import storage
from tvifm.data.sidecars import read_caption_file
from tvifm.text.colour import has_colour


def test_storage_round_trip_on_s3(s3_bucket: str) -> None:
    base = f"s3://{s3_bucket}/data"
    uri = storage.join(base, "a", "x.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"\x00payload")
    assert storage.exists(uri) and storage.read_bytes(uri) == b"\x00payload"
    with storage.open(storage.join(base, "notes.txt"), "w") as fh:
        fh.write("héllo")
    with storage.open(storage.join(base, "notes.txt"), "r") as fh:
        assert fh.read() == "héllo"
    storage.write_bytes(storage.join(base, ".hidden"), b"")
    assert storage.list(base) == [storage.join(base, "a", "x.bin"), storage.join(base, "notes.txt")]
    assert storage.list(base, suffix=".txt") == [storage.join(base, "notes.txt")]
    storage.delete(uri)
    assert not storage.exists(uri)
    with pytest.raises(storage.StorageError, match="no such object"):
        storage.read_bytes(uri)


def test_parquet_through_the_arrow_s3_filesystem(s3_bucket: str) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"rel": ["a.jpg", "b.jpg"]}), sink)
    uri = f"s3://{s3_bucket}/t/table.parquet"
    storage.write_bytes(uri, sink.getvalue())
    fs, path = storage.arrow_filesystem(uri)
    assert path == f"{s3_bucket}/t/table.parquet"
    assert pq.read_table(path, filesystem=fs).column("rel").to_pylist() == ["a.jpg", "b.jpg"]


@pytest.mark.slow
def test_captioning_reads_from_s3_and_writes_results_to_s3(
    ray_local: None,
    synth_small: Path,
    tiny_captioners: dict[str, str],
    s3_bucket: str,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    root = f"s3://{s3_bucket}/synthtri"
    storage.upload_tree(str(synth_small), root)
    for modality, name in (("visible", "rgb"), ("ir", "ir")):
        storage.upload_tree(tiny_captioners[modality], f"s3://{s3_bucket}/captioners/{name}")
    overrides = [
        f"caption.captioner_dir=s3://{s3_bucket}/captioners",
        f"caption.s3_endpoint={s3_endpoint}",
        "caption.actors=2",
        "caption.infer_batch_size=8",
    ]
    ccfg = load_config("tiny", overrides).caption

    result = run_caption_job(root, ccfg, progress=False)

    assert result.output == f"{root}/Text/captions"
    manifest = build_manifest(root, "synth")
    for modality, folder in (("visible", "Blip_RGB"), ("ir", "Blip_IR")):
        sidecar = f"{root}/Text/{folder}/caption_llm_dict_{folder}.json"
        assert result.sidecars[modality] == sidecar
        local = tmp_path / f"downloaded-{folder}.json"
        local.write_bytes(storage.read_bytes(sidecar))
        captions = read_caption_file(local).captions
        assert set(captions) == {r["rel"] for r in manifest if r["modality"] == modality}
        assert all(c.aug_description for c in captions.values())
        if modality == "ir":
            assert not any(has_colour(c.description) for c in captions.values())
    fs, path = storage.arrow_filesystem(f"{result.output}/captions.parquet")
    assert pq.read_table(path, filesystem=fs).num_rows == len(manifest)
    report = json.loads(storage.read_bytes(f"{result.output}/report.json"))
    assert report["skipped"]["count"] == 0
    assert not (synth_small / "Text" / "captions").exists()  # nothing landed on the local copy


def test_captioner_fine_tuned_from_s3_data_is_saved_to_and_loaded_from_s3(
    synth_small: Path, s3_bucket: str, tiny_captioner_overrides: list[str], capsys: pytest.CaptureFixture
) -> None:
    from tvifm.captioning.model import load_captioner
    from tvifm.cli import main as cli

    root, target = f"s3://{s3_bucket}/synthtri", f"s3://{s3_bucket}/models"
    storage.upload_tree(str(synth_small), root)
    args = ["--root", root, "--modality", "visible", *tiny_captioner_overrides]
    args.append(f"caption.captioner_dir={target}")
    assert cli(["caption-finetune", *args]) == 0
    [summary] = json.loads(capsys.readouterr().out)
    assert summary["directory"] == f"{target}/rgb"
    assert storage.exists(f"{target}/rgb/model.safetensors")
    captioner = load_captioner(f"{target}/rgb")
    assert captioner.meta["modality"] == "visible"


def _hostile_keys(outside: Path) -> dict[str, str]:
    """Object keys below ``model/`` that a naive download would write outside its folder (to ``outside``)."""
    return {
        "double slash": f"model//{outside.as_posix().lstrip('/')}/pwned.txt",
        "dot dot": f"model/../{outside.name}/pwned.txt",
        "backslash": f"model/..\\{outside.name}\\pwned.txt",
        "NUL": "model/a\x00b.txt",
    }


@pytest.mark.parametrize("kind", ["double slash", "dot dot", "backslash", "NUL"])
def test_download_tree_refuses_a_key_that_leaves_the_folder(
    s3_bucket: str, tmp_path: Path, kind: str
) -> None:
    outside = tmp_path / "outside"
    key = _hostile_keys(outside)[kind]
    client = storage.s3_client()
    client.put_object(Bucket=s3_bucket, Key="model/config.json", Body=b"{}")
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"pwned")
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="model/")["Contents"]]
    assert key in listed, f"the S3 server did not keep the key {key!r} as given: {listed}"
    dest = tmp_path / "dest"
    with pytest.raises(storage.StorageError) as err:
        storage.download_tree(f"s3://{s3_bucket}/model", dest)
    assert repr(f"s3://{s3_bucket}/{key}") in str(err.value), "the error names the object"
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [], f"files written by a refused download: {written}"


def test_download_tree_fetches_plain_keys_and_skips_hidden_ones(s3_bucket: str, tmp_path: Path) -> None:
    base = f"s3://{s3_bucket}/model"
    for key, body in {"config.json": b"{}", "weights/a.bin": b"\x01", ".a.bin.tmp": b"half"}.items():
        storage.write_bytes(storage.join(base, key), body)
    out = storage.download_tree(base, tmp_path / "dest")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["config.json", "weights/a.bin"]
    assert (out / "weights" / "a.bin").read_bytes() == b"\x01"
