"""SYSU-MM01 loader (also used for SynthTri, which is written in the same layout).

Layout::

    ROOT/camN/PPPP/NNNN.jpg        N = 1..6; RGB cameras 1, 2, 4, 5 and IR cameras 3, 6
    ROOT/exp/train_id.txt          one comma-separated line of identity ids (real: 296 ids)
    ROOT/exp/val_id.txt            (real: 99 ids)
    ROOT/exp/test_id.txt           (real: 96 ids)

Not every identity appears in every camera. Test queries are the IR images of the test identities and the
gallery holds every visible image of them (the all-search candidates; per-trial sampling is done later).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

from tvifm.data.base import DatasetSplits, Modality, Sample
from tvifm.data.images import SkipReport, list_images, require_dir
from tvifm.errors import DatasetError

LAYOUT = (
    "SYSU-MM01 layout: camN/PPPP/NNNN.jpg (RGB cameras 1,2,4,5; IR cameras 3,6) and "
    "exp/{train,val,test}_id.txt, each one comma-separated line of identity ids"
)
VISIBLE_CAMS = (1, 2, 4, 5)
IR_CAMS = (3, 6)
SPLIT_FILES = {"train": "exp/train_id.txt", "val": "exp/val_id.txt", "test": "exp/test_id.txt"}
_ID_EXAMPLE = "expected one line of comma-separated integer identity ids such as '1,2,4'"
_DIGITS = re.compile(r"\d+")


def modality_of(rel: str) -> Modality | None:
    """The modality of the file at ``rel`` (relative to the root, ``/``-separated) in this layout:
    ``camN/<id>/<name>`` is ``"visible"`` for RGB cameras 1, 2, 4, 5 and ``"ir"`` for cameras 3, 6; ``None``
    for any other file (``exp/*.txt``, sidecars, unknown cameras)."""
    parts = rel.split("/")
    cam = parts[0][3:] if parts[0].startswith("cam") else ""
    if len(parts) < 3 or not cam.isdigit():
        return None
    return "visible" if int(cam) in VISIBLE_CAMS else "ir" if int(cam) in IR_CAMS else None


def read_id_list(path: Path) -> list[int]:
    """Read a split file holding one comma-separated line of positive integer identity ids."""
    lines = _read_lines(path)
    content = [(no, text.strip()) for no, text in enumerate(lines, 1) if text.strip()]
    if not content:
        raise DatasetError(f"file is empty; {_ID_EXAMPLE}", path=str(path))
    if len(content) > 1:
        raise DatasetError(f"more than one non-empty line; {_ID_EXAMPLE}", path=str(path), line=content[1][0])
    line_no, text = content[0]
    tokens = [tok.strip() for tok in text.split(",")]
    if tokens[-1] == "":  # a trailing comma is harmless
        tokens.pop()
    ids = [_parse_id(tok, i, path, line_no) for i, tok in enumerate(tokens, 1)]
    repeated = sorted(pid for pid, n in Counter(ids).items() if n > 1)
    if repeated:
        raise DatasetError(f"identity ids listed more than once: {repeated}", path=str(path), line=line_no)
    return ids


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError as err:
        raise DatasetError("file is missing", path=str(path)) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read text file: {err}", path=str(path)) from err


def _parse_id(token: str, position: int, path: Path, line: int) -> int:
    if not _DIGITS.fullmatch(token) or int(token) <= 0:
        raise DatasetError(f"item {position} is {token!r}; {_ID_EXAMPLE}", path=str(path), line=line)
    return int(token)


def scan_camera(root: Path, cam_rel: str, cam: int, modality: Modality, report: SkipReport) -> list[Sample]:
    """List ``root/cam_rel/<id>/<image>`` as samples of camera ``cam`` without decoding the images.

    Identity folders must be numeric (``0012``); dot-hidden entries are ignored and empty image files
    are skipped into ``report``. A missing camera folder yields no samples.
    """
    cam_dir = root / cam_rel
    if not cam_dir.is_dir():
        return []
    samples: list[Sample] = []
    for id_dir in _identity_dirs(cam_dir):
        rel_dir = f"{cam_rel}/{id_dir.name}"
        for name in list_images(id_dir, report):
            samples.append(Sample(str(id_dir / name), f"{rel_dir}/{name}", int(id_dir.name), cam, modality))
    return samples


def _identity_dirs(cam_dir: Path) -> list[Path]:
    found: list[Path] = []
    with os.scandir(cam_dir) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if not (entry.is_dir() and _DIGITS.fullmatch(entry.name)):
                raise DatasetError(
                    "unexpected entry in a camera folder; expected only identity folders such as 0012",
                    path=entry.path,
                )
            found.append(Path(entry.path))
    return sorted(found, key=lambda p: p.name)


def load_sysu(root: str | os.PathLike[str], name: str = "sysu") -> DatasetSplits:
    """Load a dataset root in the SYSU-MM01 layout (see the module docstring) into its splits."""
    base = require_dir(Path(os.path.abspath(root)), LAYOUT)
    splits = _read_splits(base)
    report = SkipReport()
    by_id = _scan_all(base, report)
    for split, ids in splits.items():
        _require_images(base / SPLIT_FILES[split], ids, by_id)
    train, val, test = (_select(by_id, splits[s]) for s in ("train", "val", "test"))
    return DatasetSplits(
        name=name,
        root=str(base),
        train_visible=_of(train, "visible"),
        train_ir=_of(train, "ir"),
        test_query=_of(test, "ir"),
        test_gallery=_of(test, "visible"),
        val_ids=sorted(splits["val"]),
        val_visible=_of(val, "visible"),
        val_ir=_of(val, "ir"),
        skipped=list(report.items),
    )


def _read_splits(base: Path) -> dict[str, list[int]]:
    splits: dict[str, list[int]] = {}
    for split, rel in SPLIT_FILES.items():
        path = base / rel
        if not path.is_file():
            raise DatasetError(f"split file is missing; expected {LAYOUT}", path=str(path))
        splits[split] = read_id_list(path)
    _require_disjoint(base, splits)
    return splits


def _require_disjoint(base: Path, splits: dict[str, list[int]]) -> None:
    names = list(splits)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            common = sorted(set(splits[first]) & set(splits[second]))
            if common:
                raise DatasetError(
                    f"identity ids {common} are listed in both {SPLIT_FILES[first]} and "
                    f"{SPLIT_FILES[second]}; each identity must belong to one split",
                    path=str(base / SPLIT_FILES[second]),
                )


def _scan_all(base: Path, report: SkipReport) -> dict[int, list[Sample]]:
    cams: list[tuple[int, Modality]] = [(cam, "visible") for cam in VISIBLE_CAMS]
    cams += [(cam, "ir") for cam in IR_CAMS]
    if not any((base / f"cam{cam}").is_dir() for cam, _ in cams):
        raise DatasetError(f"no camera folders cam1..cam6 found; expected {LAYOUT}", path=str(base))
    by_id: dict[int, list[Sample]] = {}
    for cam, modality in sorted(cams):
        for sample in scan_camera(base, f"cam{cam}", cam, modality, report):
            by_id.setdefault(sample.pid, []).append(sample)
    return by_id


def _require_images(split_file: Path, ids: list[int], by_id: dict[int, list[Sample]]) -> None:
    missing = [pid for pid in ids if pid not in by_id]
    if missing:
        raise DatasetError(
            f"identity ids {missing} are listed but have no image in any camera folder "
            f"(expected camN/{missing[0]:04d}/NNNN.jpg)",
            path=str(split_file),
        )


def _select(by_id: dict[int, list[Sample]], ids: list[int]) -> list[Sample]:
    chosen = [s for pid in ids for s in by_id[pid]]
    return sorted(chosen, key=lambda s: s.rel)


def _of(samples: list[Sample], modality: Modality) -> list[Sample]:
    return [s for s in samples if s.modality == modality]
