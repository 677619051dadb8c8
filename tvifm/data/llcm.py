"""LLCM loader, for the dataset as it is published.

Layout::

    ROOT/idx/train_vis.txt      lines '<path> <label>': vis/0001/0001_c02_s200109_f6420_1.jpg 0
    ROOT/idx/train_nir.txt      the same for nir/<id>/<file>
    ROOT/idx/test_id.txt        one comma-separated line of test identity ids
    ROOT/vis/<id>/*.jpg, ROOT/nir/<id>/*.jpg       training images; the camera is in the file name
                                                   (PPPP_cNN_...), as tools that read LLCM take it
    ROOT/test_vis/camK/<id>/*.jpg, ROOT/test_nir/camK/<id>/*.jpg   test images; camera from the folder
    ROOT/Text/                  Tri-LLCM captions (optional)

Copies that put the training images in camera folders (index lines ``train_vis/camK/<id>/<file>``)
load too. The identity is the 4-digit folder; not every identity appears in every camera. The default
test direction is IR->RGB: queries are the ``test_nir`` images of the test identities and the gallery is
every ``test_vis`` image of them. Tri-LLCM keys every image's caption as ``.../vis|nir/<id>/<file>``,
test images included (the official test code looks ``test_nir/camK/<id>/<file>`` up under
``nir/<id>/<file>``): :func:`caption_key` gives that form.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tvifm.data.base import DatasetSplits, Modality, Sample
from tvifm.data.images import SkipReport, require_dir
from tvifm.data.regdb import IndexEntry, parse_number, read_index_samples
from tvifm.data.sysu import read_id_list, scan_camera
from tvifm.errors import DatasetError

LAYOUT = (
    "LLCM layout: idx/train_vis.txt and idx/train_nir.txt with lines '<relative path> <label>' "
    "(vis/<id>/PPPP_cNN_<rest>.jpg and nir/<id>/..., or train_vis/camK/<id>/<name>.jpg), "
    "idx/test_id.txt (one comma-separated line of ids), test_vis/camK/<id>/*.jpg and test_nir/camK/<id>/*.jpg"
)
TRAIN_INDEX: dict[Modality, tuple[str, tuple[str, str]]] = {
    "visible": ("idx/train_vis.txt", ("vis/<id>/<PPPP_cNN_...>", "train_vis/cam<K>/<id>/<name>")),
    "ir": ("idx/train_nir.txt", ("nir/<id>/<PPPP_cNN_...>", "train_nir/cam<K>/<id>/<name>")),
}
CAMERA_IN_NAME = re.compile(r"^\d+_c(\d+)_")
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


def caption_key(rel: str) -> str:
    """The Tri-LLCM caption key form of the image at ``rel``: ``nir/<id>/<file>`` for
    ``test_nir/camK/<id>/<file>`` (and ``vis/...`` for ``test_vis/...``); other paths as they are."""
    parts = rel.split("/")
    if len(parts) == 4 and parts[0] in ("test_vis", "test_nir") and parts[1].startswith("cam"):
        return "/".join((parts[0].removeprefix("test_"), parts[2], parts[3]))
    return rel


def camera_of(name: str, index: Path, line: int) -> int:
    """The camera of a training image from its file name (``0001_c02_s200109_f6420_1.jpg`` -> 2)."""
    found = CAMERA_IN_NAME.match(name)
    if found is None:
        raise DatasetError(
            f"file name {name!r} does not carry the camera; expected LLCM names PPPP_cNN_... "
            "(e.g. 0001_c02_s200109_f6420_1.jpg) under vis/<id>/ and nir/<id>/",
            str(index),
            line,
        )
    return int(found.group(1))


def _locate(entry: IndexEntry, index: Path) -> tuple[int, int]:
    parts = entry.parts
    if len(parts) == 3:  # vis/<id>/<file>: the published layout
        _, id_folder, name = parts
        return parse_number(id_folder, "identity", index, entry.line), camera_of(name, index, entry.line)
    _, cam_folder, id_folder, _ = parts
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
