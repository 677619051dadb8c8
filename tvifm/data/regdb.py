"""RegDB loader, and the reader of ``<relative path> <label>`` index files that LLCM shares.

Layout::

    ROOT/Visible/<id>/<name>.bmp           e.g. Visible/193/female_back_v_02396_193.bmp
    ROOT/Thermal/<id>/<name>.bmp           e.g. Thermal/193/female_back_t_02405_193.bmp
    ROOT/idx/{train,test}_{visible,thermal}_{1..10}.txt

Each index line is ``<path relative to ROOT> <label>`` where the label is the identity's index within that
file; the identity itself is the ``<id>`` folder. Real RegDB has 412 identities with 10 visible and 10
thermal images each, and trial ``t`` splits the identities 206 train / 206 test. Cameras: visible 1,
thermal 2. The default test direction is thermal query -> visible gallery (the paper's IR->RGB).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tvifm.data.base import MODALITIES, DatasetSplits, Modality, Sample
from tvifm.data.images import EMPTY_FILE, SkipReport, require_dir
from tvifm.errors import ConfigError, DatasetError

LAYOUT = (
    "RegDB layout: Visible/<id>/*.bmp, Thermal/<id>/*.bmp and "
    "idx/{train,test}_{visible,thermal}_{1..10}.txt with lines '<relative path> <label>'"
)
TRIALS = range(1, 11)
VISIBLE_CAM = 1
THERMAL_CAM = 2
_MODALITY_DIRS: dict[Modality, tuple[str, str, int]] = {
    "visible": ("visible", "Visible", VISIBLE_CAM),
    "ir": ("thermal", "Thermal", THERMAL_CAM),
}


def modality_of(rel: str) -> Modality | None:
    """The modality of the file at ``rel`` (relative to the root, ``/``-separated) in this layout:
    ``"visible"`` below ``Visible/``, ``"ir"`` below ``Thermal/``, ``None`` elsewhere (``idx/``...)."""
    top = rel.split("/")[0]
    return next((m for m, (_, folder, _) in _MODALITY_DIRS.items() if folder == top), None)


@dataclass(frozen=True)
class IndexEntry:
    """One line of an index file: its 1-based line number, normalised relative path and label."""

    line: int
    rel: str
    label: int

    @property
    def parts(self) -> list[str]:
        """The components of ``rel``."""
        return self.rel.split("/")


Locator = Callable[[IndexEntry, Path], tuple[int, int]]
"""Maps an index entry (and its index file, for errors) to ``(identity, camera)``."""


def read_index(index: Path, form: str | tuple[str, ...]) -> list[IndexEntry]:
    """Parse ``<relative path> <label>`` lines; every path must have the shape ``form`` (or one of them).

    A form such as ``"Visible/<id>/<name>"`` fixes the first folder and the number of components.

    Blank lines are ignored. Every problem raises :class:`DatasetError` naming the file and line.
    """
    entries: list[IndexEntry] = []
    first_line: dict[str, int] = {}
    for line_no, text in enumerate(_read_text(index).splitlines(), 1):
        if not text.strip():
            continue
        entry = _parse_line(text, index, line_no, form)
        if entry.rel in first_line:
            raise DatasetError(
                f"{entry.rel} is listed twice (first on line {first_line[entry.rel]})", str(index), line_no
            )
        first_line[entry.rel] = line_no
        entries.append(entry)
    if not entries:
        raise DatasetError("index file lists no images; expected lines '<relative path> <label>'", str(index))
    return entries


def _read_text(index: Path) -> str:
    try:
        return index.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise DatasetError("index file is missing", path=str(index)) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read index file: {err}", path=str(index)) from err


def _parse_line(text: str, index: Path, line_no: int, form: str | tuple[str, ...]) -> IndexEntry:
    fields = text.split()
    if len(fields) != 2:
        raise DatasetError(
            f"expected two fields '<relative path> <label>', got {len(fields)}: {text.strip()!r}",
            str(index),
            line_no,
        )
    raw, label = fields
    try:
        value = int(label)
    except ValueError:
        raise DatasetError(f"label {label!r} is not an integer", str(index), line_no) from None
    return IndexEntry(line_no, _normalise(raw, index, line_no, form), value)


def _normalise(raw: str, index: Path, line_no: int, form: str | tuple[str, ...]) -> str:
    path = raw.replace("\\", "/")
    rel = posixpath.normpath(path)
    if path.startswith("/") or ":" in path.split("/")[0] or rel == ".." or rel.startswith("../"):
        raise DatasetError(f"path {raw!r} lies outside the dataset root", str(index), line_no)
    forms = (form,) if isinstance(form, str) else form
    parts = rel.split("/")
    if not any(parts[0] == f.split("/")[0] and len(parts) == len(f.split("/")) for f in forms):
        expected = " or ".join(forms)
        raise DatasetError(f"path {raw!r} does not have the expected form {expected}", str(index), line_no)
    return rel


def parse_number(text: str, what: str, index: Path, line: int, prefix: str = "") -> int:
    """Parse a folder name such as ``0012`` (or ``cam4`` with ``prefix="cam"``) into its number."""
    digits = text[len(prefix) :] if text.startswith(prefix) else ""
    if not digits.isdigit():
        raise DatasetError(f"{what} folder {text!r} is not of the form {prefix}<number>", str(index), line)
    return int(digits)


def read_index_samples(
    root: Path,
    index: Path,
    form: str | tuple[str, ...],
    modality: Modality,
    locate: Locator,
    report: SkipReport,
) -> list[Sample]:
    """Read an index file into samples, checking labels and that every listed image exists.

    One identity folder must carry one label throughout the file and vice versa. Empty image files are
    skipped into ``report``; a listed file that does not exist is an error naming the index line.
    """
    entries = read_index(index, form)
    located = [(entry, *locate(entry, index)) for entry in entries]
    _check_labels(index, [(entry, pid) for entry, pid, _ in located])
    samples = []
    for entry, pid, cam in located:
        path = root / entry.rel
        if _usable(path, index, entry.line, report):
            samples.append(Sample(str(path), entry.rel, pid, cam, modality))
    return samples


def _check_labels(index: Path, pairs: list[tuple[IndexEntry, int]]) -> None:
    label_of: dict[int, tuple[int, int]] = {}
    pid_of: dict[int, tuple[int, int]] = {}
    for entry, pid in pairs:
        label, first = label_of.setdefault(pid, (entry.label, entry.line))
        if label != entry.label:
            raise DatasetError(
                f"identity {pid} has label {entry.label} here but label {label} on line {first}; "
                "expected one label per identity folder",
                str(index),
                entry.line,
            )
        other, first = pid_of.setdefault(entry.label, (pid, entry.line))
        if other != pid:
            raise DatasetError(
                f"label {entry.label} is given to identity {pid} here but to identity {other} on line "
                f"{first}; expected one identity folder per label",
                str(index),
                entry.line,
            )


def _usable(path: Path, index: Path, line: int, report: SkipReport) -> bool:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetError(f"listed image does not exist: {path}", str(index), line) from None
    except OSError as err:
        raise DatasetError(f"cannot access listed image {path}: {err}", str(index), line) from None
    if not path.is_file():
        raise DatasetError(f"listed image is not a file: {path}", str(index), line)
    if size == 0:
        report.add(path, EMPTY_FILE)
        return False
    return True


def _locate_regdb(entry: IndexEntry, index: Path) -> tuple[int, int]:
    top, folder, _ = entry.parts
    cam = VISIBLE_CAM if top == "Visible" else THERMAL_CAM
    return parse_number(folder, "identity", index, entry.line), cam


def check_trial(trial: int) -> int:
    """Return ``trial`` if it is an integer in 1..10, else raise :class:`ConfigError`."""
    if isinstance(trial, bool) or not isinstance(trial, int) or trial not in TRIALS:
        raise ConfigError(f"RegDB trial must be an integer from 1 to 10, got {trial!r}")
    return trial


def load_regdb(root: str | os.PathLike[str], trial: int = 1) -> DatasetSplits:
    """Load RegDB split ``trial`` (1..10) from ``root`` (see the module docstring)."""
    check_trial(trial)
    base = require_dir(Path(os.path.abspath(root)), LAYOUT)
    report = SkipReport()
    parts = {
        (split, modality): _read_part(base, split, modality, trial, report)
        for split in ("train", "test")
        for modality in MODALITIES
    }
    _check_disjoint(base, trial, parts)
    return DatasetSplits(
        name="regdb",
        root=str(base),
        train_visible=parts["train", "visible"],
        train_ir=parts["train", "ir"],
        test_query=parts["test", "ir"],
        test_gallery=parts["test", "visible"],
        skipped=list(report.items),
    )


def index_path(base: Path, split: str, modality: Modality, trial: int) -> Path:
    """``base/idx/<split>_<visible|thermal>_<trial>.txt``."""
    return base / "idx" / f"{split}_{_MODALITY_DIRS[modality][0]}_{trial}.txt"


def _read_part(base: Path, split: str, modality: Modality, trial: int, report: SkipReport) -> list[Sample]:
    index = index_path(base, split, modality, trial)
    if not index.is_file():
        raise DatasetError(f"index file is missing; expected {LAYOUT}", path=str(index))
    form = f"{_MODALITY_DIRS[modality][1]}/<id>/<name>"
    return read_index_samples(base, index, form, modality, _locate_regdb, report)


def _check_disjoint(base: Path, trial: int, parts: dict[tuple[str, Modality], list[Sample]]) -> None:
    train = {s.pid for m in MODALITIES for s in parts["train", m]}
    test = {s.pid for m in MODALITIES for s in parts["test", m]}
    common = sorted(train & test)
    if common:
        raise DatasetError(
            f"identities {common[:10]} appear in both the train and the test index files of trial {trial} "
            f"(idx/train_*_{trial}.txt and idx/test_*_{trial}.txt); expected disjoint identities",
            path=str(base / "idx"),
        )
