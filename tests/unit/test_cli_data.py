"""``tvifm data synth`` and ``tvifm data stats``: what a user types to make and check a dataset."""

from __future__ import annotations

import json

from tvifm.cli import main as cli


def test_data_stats_json_counts_the_small_synth(small_synth, capsys) -> None:
    assert cli(["data", "stats", "--dataset", "synth", "--root", str(small_synth), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    manifest = json.loads((small_synth / "synthtri.json").read_text())
    assert stats["train"]["ids"] + stats["val"]["ids"] + stats["test"]["ids"] == 36
    # 3 images per camera: 4 visible cameras, 2 IR cameras
    assert stats["train"]["visible"] == 4 * 3 * stats["train"]["ids"]
    assert stats["train"]["ir"] == 2 * 3 * stats["train"]["ids"]
    assert stats["test"]["query"] == 2 * 3 * stats["test"]["ids"]
    assert stats["test"]["gallery"] == 4 * 3 * stats["test"]["ids"]
    assert stats["captions"]["images"] == 36 * 6 * 3
    assert manifest["args"]["seed"] == 3


def test_data_stats_human_table(small_synth, capsys) -> None:
    assert cli(["data", "stats", "--dataset", "synth", "--root", str(small_synth)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "captions" in out


def test_data_stats_errors_are_messages_not_tracebacks(tmp_path, capsys) -> None:
    assert cli(["data", "stats", "--dataset", "sysu", "--root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "does not exist" in err


def test_data_synth_writes_and_reuses(tmp_path, capsys) -> None:
    root = tmp_path / "s"
    args = ["data", "synth", "--root", str(root), "--ids", "8", "--seed", "1", "--image-size", "64x32"]
    assert cli(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["ids"] == 8 and not first["reused"]
    assert (root / "contact_sheet.png").is_file()
    assert cli(args) == 0
    assert json.loads(capsys.readouterr().out)["reused"]
    assert cli([*args[:-1], "64by32"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
