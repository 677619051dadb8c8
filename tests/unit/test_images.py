"""Image reading: RGB output, clear errors for corrupt files, and skip reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from layouts import write_file, write_image
from PIL import Image

from tvifm.data.images import CorruptImageError, SkipReport, read_image, read_image_or_skip
from tvifm.errors import DatasetError


@pytest.mark.parametrize("name", ["0004.jpg", "male_front_t_00123_12.bmp", "x.png"])
def test_valid_image_is_returned_in_rgb(tmp_path: Path, name: str) -> None:
    path = write_image(tmp_path / name, color=(10, 200, 30), size=(6, 12))
    img = read_image(path)
    assert img.mode == "RGB" and img.size == (6, 12)


def test_grayscale_thermal_image_becomes_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "thermal.bmp"
    Image.new("L", (4, 4), 77).save(path)
    img = read_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((1, 1)) == (77, 77, 77)


def truncated(tmp_path: Path) -> Path:
    good = write_image(tmp_path / "good.jpg")
    data = good.read_bytes()
    return write_file(tmp_path / "cam3" / "0012" / "0004.jpg", data[: len(data) // 2])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: write_file(d / "empty.jpg", b""), "empty file"),
        (truncated, "Truncated|truncated"),
        (lambda d: write_file(d / "text.bmp", b"this is not an image"), "cannot identify"),
        (lambda d: d / "missing.jpg", "no such file"),
        (lambda d: d, "IsADirectoryError|Errno"),
    ],
)
def test_unreadable_image_raises_corrupt_image_error_naming_the_file(
    tmp_path: Path, make, reason: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(CorruptImageError, match=reason) as err:
        read_image(path)
    assert isinstance(err.value, DatasetError)
    assert str(err.value).startswith(f"{path}: cannot read image")
    assert err.value.path == str(path)


def test_read_or_skip_records_corrupt_images_and_keeps_going(tmp_path: Path) -> None:
    report = SkipReport()
    good = write_image(tmp_path / "good.jpg")
    bad = write_file(tmp_path / "bad.jpg", b"\x00\x01")
    assert read_image_or_skip(good, report) is not None
    assert read_image_or_skip(bad, report) is None
    assert len(report) == 1
    assert report.items[0][0] == str(bad)


def test_skip_report_summary_and_json() -> None:
    report = SkipReport()
    assert report.summary() == "no images skipped"
    for i in range(7):
        report.add(f"cam3/0001/{i:04d}.jpg", "empty file (0 bytes)")
    summary = report.summary(limit=2)
    assert summary.startswith(
        "7 images skipped: cam3/0001/0000.jpg (empty file (0 bytes)); cam3/0001/0001.jpg"
    )
    assert summary.endswith("and 5 more")
    decoded = json.loads(report.to_json())
    assert decoded["count"] == 7
    assert decoded["items"][6] == {"path": "cam3/0001/0006.jpg", "reason": "empty file (0 bytes)"}
