"""LLCM loader.

Layout::

    ROOT/idx/train_vis.txt      lines '<path> <label>': train_vis/cam2/0001/0001_c02_s200109_f6420_1.jpg 0
    ROOT/idx/train_nir.txt      the same for train_nir/camK/<id>/...
    ROOT/idx/test_id.txt        one comma-separated line of test identity ids
    ROOT/test_vis/camK/<id>/*.jpg
    ROOT/test_nir/camK/<id>/*.jpg

The camera is the ``camK`` folder and the identity the 4-digit folder below it; not every identity appears
in every camera. The default test direction is IR->RGB: queries are the ``test_nir`` images of the test
identities and the gallery is every ``test_vis`` image of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from tvifm.data.base import DatasetSplits, Modality, Sample
from tvifm.data.images import SkipReport, require_dir
from tvifm.data.regdb import IndexEntry, parse_number, read_index_samples
from tvifm.data.sysu import read_id_list, scan_camera
from tvifm.errors import DatasetError

LAYOUT = (
    "LLCM layout: idx/train_vis.txt and idx/train_nir.txt with lines '<relative path> <label>' "
    "(train_vis/camK/<id>/<name>.jpg), idx/test_id.txt (one comma-separated line of ids), "
    "test_vis/camK/<id>/*.jpg and test_nir/camK/<id>/*.jpg"
)
TRAIN_INDEX: dict[Modality, tuple[str, str]] = {
    "visible": ("idx/train_vis.txt", "train_vis/cam<K>/<id>/<name>"),
    "ir": ("idx/train_nir.txt", "train_nir/cam<K>/<id>/<name>"),
}
TEST_DIRS: dict[Modality, str] = {"visible": "test_vis", "ir": "test_nir"}
TEST_ID_FILE = "idx/test_id.txt"


def modality_of(rel: str) -> Modality | None:
    """The modality of the image at ``rel`` (relative to the root, ``/``-separated) in this layout:
    ``"ir"`` when a folder of its path names ``nir`` (``train_nir/``, ``test_nir/``), else ``"visible"``
    when one names ``vis``; ``None`` for other files (``idx/*.txt``). Folder names are matched
    case-insensitively, so re-packaged copies (``NIR/``, ``vis/``) are recognised too."""
    folders = [p.lower() for p in rel.split("/")[:-1]]
    if any("nir" in p for p in folders):
        return "ir"
    return "visible" if any("vis" in p for p in folders) else None


def load_llcm(root: str | os.PathLike[str]) -> DatasetSplits:
    """Load LLCM from ``root`` (see the module docstring) with the IR->RGB test direction."""
    base = require_dir(Path(os.path.abspath(root)), LAYOUT)
    report = SkipReport()
    train = {m: _read_train(base, m, report) for m in TRAIN_INDEX}
    test_ids = read_id_list(_require_file(base / TEST_ID_FILE))
    _check_disjoint(base, train, test_ids)
    test = {m: _scan_test(base, m, set(test_ids), report) for m in TEST_DIRS}
    _require_images(base, test_ids, [*test["visible"], *test["ir"]])
    return DatasetSplits(
        name="llcm",
        root=str(base),
        train_visible=train["visible"],
        train_ir=train["ir"],
        test_query=test["ir"],
        test_gallery=test["visible"],
        skipped=list(report.items),
    )


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"file is missing; expected {LAYOUT}", path=str(path))
    return path


def _locate(entry: IndexEntry, index: Path) -> tuple[int, int]:
    _, cam_folder, id_folder, _ = entry.parts
    cam = parse_number(cam_folder, "camera", index, entry.line, prefix="cam")
    return parse_number(id_folder, "identity", index, entry.line), cam


def _read_train(base: Path, modality: Modality, report: SkipReport) -> list[Sample]:
    rel, form = TRAIN_INDEX[modality]
    return read_index_samples(base, _require_file(base / rel), form, modality, _locate, report)


def _check_disjoint(base: Path, train: dict[Modality, list[Sample]], test_ids: list[int]) -> None:
    common = sorted({s.pid for samples in train.values() for s in samples} & set(test_ids))
    if common:
        raise DatasetError(
            f"test identity ids {common[:10]} also appear in the training index files "
            f"({TRAIN_INDEX['visible'][0]}, {TRAIN_INDEX['ir'][0]}); expected disjoint identities",
            path=str(base / TEST_ID_FILE),
        )


def _scan_test(base: Path, modality: Modality, ids: set[int], report: SkipReport) -> list[Sample]:
    top = require_dir(base / TEST_DIRS[modality], LAYOUT)
    samples: list[Sample] = []
    for name in sorted(os.listdir(top)):
        if name.startswith("."):
            continue
        cam_rel = f"{TEST_DIRS[modality]}/{name}"
        if not (name.startswith("cam") and name[3:].isdigit() and (top / name).is_dir()):
            raise DatasetError(
                "unexpected entry; expected only camera folders cam1, cam2, ...", path=str(base / cam_rel)
            )
        samples += scan_camera(base, cam_rel, int(name[3:]), modality, report)
    return sorted((s for s in samples if s.pid in ids), key=lambda s: s.rel)


def _require_images(base: Path, test_ids: list[int], samples: list[Sample]) -> None:
    found = {s.pid for s in samples}
    missing = [pid for pid in test_ids if pid not in found]
    if missing:
        raise DatasetError(
            f"test identity ids {missing[:10]} have no image under test_vis/camK/<id>/ or "
            f"test_nir/camK/<id>/ (expected folders such as test_nir/cam4/{missing[0]:04d}/)",
            path=str(base / TEST_ID_FILE),
        )
