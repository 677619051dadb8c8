"""``tvifm gallery check|repair``: a JSON report on stdout, exit status 1 while the gallery is broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tvifm.cli import main
from tvifm.serve.gallery import PersistentGallery, Record


def _gallery(root: Path) -> PersistentGallery:
    g = PersistentGallery(str(root), 4, "m")
    g.add([Record("a", "visible"), Record("b", "ir")], torch.eye(4)[:2], images=[b"a", b"b"])
    return g


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["gallery", *args])
    return code, json.loads(capsys.readouterr().out)


def test_check_and_repair_print_a_report_and_exit_1_while_inconsistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = tmp_path / "g"
    g = _gallery(uri)
    code, report = _run(capsys, "check", "--uri", str(uri))
    assert code == 0 and report["ok"] and report["items"] == 2 and report["problems"] == []

    (uri / g.index.records["b"].image).unlink()
    (uri / "images" / "crashed").mkdir()
    (uri / "images" / "crashed" / "000000").write_bytes(b"left over")
    code, report = _run(capsys, "check", "--uri", str(uri), "--grace-seconds", "0")
    assert code == 1 and report["problems"] == [f"stored image {g.index.records['b'].image} is missing"]
    assert report["orphans"] == ["images/crashed/000000"]

    code, report = _run(capsys, "repair", "--uri", str(uri), "--grace-seconds", "0")
    assert code == 0 and report["ok"] and report["orphans"] == [] and report["items"] == 2
    assert any("deleted 1 orphaned files" in line for line in report["repaired"])
    assert not (uri / "images" / "crashed").exists()


def test_the_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["gallery", "--uri", "x"])
    assert "check" in capsys.readouterr().err
