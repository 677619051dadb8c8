"""Image files on disk: listing them without decoding, reading them, and reporting skipped ones.

Loaders list images by name and size only (a dataset of 30k images must list in well under a second);
decoding happens when a sample is used, through :func:`read_image`. A file that cannot be decoded raises
:class:`CorruptImageError` naming it; a job that must not stop for one bad image records it in a
:class:`SkipReport` instead (see :func:`read_image_or_skip`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tvifm.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
EMPTY_FILE = "empty file (0 bytes)"


class CorruptImageError(DatasetError):
    """An image file is missing, empty, truncated or not an image at all."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"cannot read image: {reason}", path=str(path))
        self.reason = reason


@dataclass
class SkipReport:
    """Images left out of a job, each with the reason, so they are reported instead of silently lost."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str | os.PathLike[str], reason: str) -> None:
        """Record that ``path`` was skipped because of ``reason``."""
        self.items.append((str(path), reason))

    def __len__(self) -> int:
        return len(self.items)

    def summary(self, limit: int = 5) -> str:
        """One line for logs: how many images were skipped and the first ``limit`` of them."""
        if not self.items:
            return "no images skipped"
        shown = "; ".join(f"{path} ({reason})" for path, reason in self.items[:limit])
        more = len(self.items) - limit
        tail = f"; and {more} more" if more > 0 else ""
        noun = "image" if len(self.items) == 1 else "images"
        return f"{len(self.items)} {noun} skipped: {shown}{tail}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: ``{"count": n, "items": [{"path": ..., "reason": ...}, ...]}``."""
        return {
            "count": len(self.items),
            "items": [{"path": path, "reason": reason} for path, reason in self.items],
        }

    def to_json(self, indent: int | None = None) -> str:
        """The report as a JSON document (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode the whole image at ``path`` and return it in RGB mode.

    Raises :class:`CorruptImageError` naming the file when it is missing, empty, truncated or not a
    decodable image.
    """
    try:
        if os.path.getsize(path) == 0:
            raise CorruptImageError(path, EMPTY_FILE)
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError as err:
        raise CorruptImageError(path, "no such file") from err
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise CorruptImageError(path, f"{type(err).__name__}: {err}") from err


def read_image_or_skip(path: str | os.PathLike[str], report: SkipReport) -> Image.Image | None:
    """Like :func:`read_image`, but record a corrupt image in ``report`` and return ``None``."""
    try:
        return read_image(path)
    except CorruptImageError as err:
        report.add(path, err.reason)
        return None


def is_image_name(name: str) -> bool:
    """True when ``name`` is a visible (not dot-hidden) file name with an image suffix."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path, report: SkipReport) -> list[str]:
    """Sorted names of the image files directly in ``folder``, without decoding them.

    Empty (0-byte) image files are left out and recorded in ``report``; other files are ignored.
    """
    names: list[str] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not (is_image_name(entry.name) and entry.is_file()):
                continue
            if entry.stat().st_size == 0:
                report.add(entry.path, EMPTY_FILE)
            else:
                names.append(entry.name)
    return sorted(names)


def require_dir(path: Path, layout: str) -> Path:
    """Return ``path`` if it is a directory, else raise a :class:`DatasetError` describing ``layout``."""
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise DatasetError(f"dataset folder {what}; expected {layout}", path=str(path))
    return path
