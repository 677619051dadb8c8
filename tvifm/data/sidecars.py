"""Tri- text sidecars: the captions published with the Tri- expanded datasets (and written by our jobs).

Layout under a dataset root (each file optional)::

    Text/Blip_RGB/caption_dict_*.json       {image path: {"description": str}}
    Text/Blip_RGB/caption_llm_dict_*.json   {image path: {"description": str, "aug_description": str}}
    Text/Blip_RGB/id_caption_map_*.json     {"<id>": [str, ...]}
    Text/Blip_IR/...                        the same for infrared images
    Text/Blip_IR/<subfolder>/*.json         LLM output re-filtered for colour words (caption_llm_dict
                                            format); its aug_description wins over caption_llm_dict's

The image paths used as keys are whatever the authors had on their machines
(``datasets/regdb/Visible/193/x.bmp``, ``/data0/.../RegDB/Thermal/193/x.bmp``); a key joins the image of
its folder's modality whose relative path ``rel`` equals the longest suffix of the key.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tvifm.data.base import MODALITIES, DatasetSplits, Modality, Sample
from tvifm.errors import DatasetError

log = logging.getLogger(__name__)

TEXT_DIR = "Text"
MODALITY_DIRS: dict[Modality, str] = {"visible": "Blip_RGB", "ir": "Blip_IR"}
FileKind = Literal["captions", "id_map"]
_CAPTION_FORM = 'expected {"description": str} or {"description": str, "aug_description": str}'


@dataclass(frozen=True)
class Caption:
    """The text of one image: its caption and, when available, an LLM rephrasing of it."""

    description: str
    aug_description: str | None = None


@dataclass
class CaptionFile:
    """The parsed content of one sidecar file; ``kind`` says which of the two mappings is filled."""

    path: str
    kind: FileKind
    captions: dict[str, Caption] = field(default_factory=dict)
    id_captions: dict[int, list[str]] = field(default_factory=dict)


def read_caption_file(path: str | os.PathLike[str]) -> CaptionFile:
    """Read a sidecar JSON file, detecting whether it maps image paths to captions or ids to lists.

    Raises :class:`DatasetError` naming the file (and the offending key) when it is not JSON, not an
    object, or mixes or breaks the two formats.
    """
    data = _load_json(Path(path))
    if not data:
        return CaptionFile(str(path), "id_map" if "id_caption_map" in Path(path).name else "captions")
    first_key, first = next(iter(data.items()))
    if isinstance(first, dict):
        return CaptionFile(str(path), "captions", captions=_parse_captions(data, str(path)))
    if isinstance(first, list):
        return CaptionFile(str(path), "id_map", id_captions=_parse_id_map(data, str(path)))
    raise DatasetError(
        f"entry {first_key!r} is a {type(first).__name__}; expected image path -> {_CAPTION_FORM} "
        "or identity id -> [str, ...]",
        path=str(path),
    )


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except FileNotFoundError as err:
        raise DatasetError("caption file is missing", path=str(path)) from err
    except json.JSONDecodeError as err:
        raise DatasetError(f"not valid JSON: {err.msg} (column {err.colno})", str(path), err.lineno) from err
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read caption file: {err}", path=str(path)) from err
    if not isinstance(data, dict):
        raise DatasetError(f"top level is a JSON {type(data).__name__}; expected an object", path=str(path))
    return data


def _parse_captions(data: dict[str, Any], path: str) -> dict[str, Caption]:
    captions: dict[str, Caption] = {}
    for key, value in data.items():
        desc = value.get("description") if isinstance(value, dict) else None
        aug = value.get("aug_description") if isinstance(value, dict) else None
        if not isinstance(desc, str) or not (aug is None or isinstance(aug, str)):
            raise DatasetError(f"entry {key!r} is malformed; {_CAPTION_FORM}", path=path)
        captions[key] = Caption(desc, aug)
    return captions


def _parse_id_map(data: dict[str, Any], path: str) -> dict[int, list[str]]:
    id_captions: dict[int, list[str]] = {}
    for key, value in data.items():
        if not key.strip().isdigit():
            raise DatasetError(f"key {key!r} is not an integer identity id", path=path)
        if not isinstance(value, list) or not all(isinstance(text, str) for text in value):
            raise DatasetError(f"entry {key!r} is malformed; expected a list of caption strings", path=path)
        id_captions.setdefault(int(key), []).extend(value)
    return id_captions


def write_caption_dict(path: str | os.PathLike[str], captions: Mapping[str, Caption]) -> None:
    """Write ``{image path: {"description", "aug_description"?}}`` in the published format, atomically.

    The file is written to a temporary sibling and renamed over ``path``, so readers never see a partial
    file. ``aug_description`` is written only for captions that have one.
    """
    target = Path(path)
    payload = {key: _caption_json(key, cap) for key, cap in captions.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=4, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _caption_json(key: str, caption: Caption) -> dict[str, str]:
    if not isinstance(caption.description, str) or not isinstance(caption.aug_description, str | None):
        raise TypeError(f"caption of {key!r} must hold strings, got {caption!r}")
    out = {"description": caption.description}
    if caption.aug_description is not None:
        out["aug_description"] = caption.aug_description
    return out


def caption_dict_path(root: str | os.PathLike[str], modality: Modality) -> Path:
    """Where a job writes the caption_llm_dict of ``modality`` under a dataset root."""
    folder = MODALITY_DIRS[modality]
    return Path(root) / TEXT_DIR / folder / f"caption_llm_dict_{folder}.json"


@dataclass
class TextIndex:
    """Captions joined to the images of a dataset.

    ``captions[modality][rel]`` is the caption of one image, ``id_maps[modality][pid]`` the per-identity
    caption list, ``unmatched_keys`` the sidecar keys that matched no image and ``sources`` the files read.
    """

    captions: dict[Modality, dict[str, Caption]] = field(default_factory=lambda: {m: {} for m in MODALITIES})
    id_maps: dict[Modality, dict[int, list[str]]] = field(default_factory=lambda: {m: {} for m in MODALITIES})
    unmatched_keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def caption(self, sample: Sample) -> Caption | None:
        """The caption of ``sample`` or ``None`` when it has none."""
        return self.captions[sample.modality].get(sample.rel)

    def id_captions(self, modality: Modality, pid: int) -> list[str]:
        """The identity-level captions of ``pid`` for ``modality`` (empty when there are none)."""
        return list(self.id_maps[modality].get(pid, []))

    @property
    def num_captioned(self) -> int:
        """Number of images (of both modalities) that have a caption."""
        return sum(len(by_rel) for by_rel in self.captions.values())

    def num_captioned_by_modality(self) -> dict[str, int]:
        """Number of captioned images per modality."""
        return {m: len(self.captions[m]) for m in MODALITIES}

    def unmatched_summary(self, limit: int = 3) -> str:
        """One line: how many sidecar keys matched no image, with a few examples."""
        if not self.unmatched_keys:
            return "every caption key matched an image"
        examples = ", ".join(self.unmatched_keys[:limit])
        return f"{len(self.unmatched_keys)} caption keys matched no image (e.g. {examples})"


def load_text(
    root: str | os.PathLike[str],
    samples: Iterable[Sample],
    key_of: Callable[[str], str] | None = None,
) -> TextIndex:
    """Read the Tri- sidecars under ``root/Text`` and join them to ``samples``.

    A key joins an image by its ``rel`` or, when ``key_of`` is given, by ``key_of(rel)`` too (the form
    a dataset's published captions key it by, e.g. LLCM's test images). A root without a ``Text`` folder
    has no captions. Keys that match no image are counted in ``unmatched_keys`` and logged, never fatal.
    """
    index = TextIndex()
    by_modality: dict[Modality, dict[str, str]] = {m: {} for m in MODALITIES}
    for sample in samples:
        forms = by_modality[sample.modality]
        forms[sample.rel] = sample.rel
        if key_of is not None:
            forms.setdefault(key_of(sample.rel), sample.rel)
    unmatched: dict[str, None] = {}
    for modality in MODALITIES:
        folder = Path(root) / TEXT_DIR / MODALITY_DIRS[modality]
        if folder.is_dir():
            _load_modality(folder, modality, by_modality[modality], index, unmatched)
    index.unmatched_keys = list(unmatched)
    if unmatched:
        log.warning("%s under %s", index.unmatched_summary(), Path(root) / TEXT_DIR)
    return index


def load_text_for(splits: DatasetSplits) -> TextIndex:
    """:func:`load_text` for every sample (train, val and test) of ``splits``, with the caption key form
    of its dataset's registry entry (``DatasetSpec.caption_key``)."""
    from tvifm.data.registry import DATASETS  # lazily: the registry imports the loaders

    spec = DATASETS.get(splits.name)
    return load_text(splits.root, all_samples(splits), spec.caption_key if spec else None)


def all_samples(splits: DatasetSplits) -> list[Sample]:
    """Every sample of ``splits``: train, validation and test, both modalities."""
    return [
        *splits.train_visible,
        *splits.train_ir,
        *splits.val_visible,
        *splits.val_ir,
        *splits.test_query,
        *splits.test_gallery,
    ]


def _load_modality(
    folder: Path, modality: Modality, forms: dict[str, str], index: TextIndex, unmatched: dict[str, None]
) -> None:
    layers = _caption_layers(folder, index)
    merged = index.captions[modality]
    keys = set(forms)
    for layer, aug_only in layers:
        for key, caption in layer.items():
            found = match_key(key, keys)
            if found is None:
                unmatched[key] = None
            else:
                rel = forms[found]
                merged[rel] = _merge(merged.get(rel), caption, aug_only)
    for path in _json_files(folder, "id_caption_map_*.json"):
        parsed = _read_kind(path, "id_map", index)
        for pid, texts in parsed.id_captions.items():
            index.id_maps[modality].setdefault(pid, []).extend(texts)


def _caption_layers(folder: Path, index: TextIndex) -> list[tuple[dict[str, Caption], bool]]:
    """Caption dicts in increasing precedence, each with whether it only contributes aug_description."""
    plain = _json_files(folder, "caption_dict_*.json")
    llm = _json_files(folder, "caption_llm_dict_*.json")
    filtered = _json_files(folder, "*/**/*.json")
    layers = [(_read_kind(p, "captions", index).captions, False) for p in (*plain, *llm)]
    layers += [(_read_kind(p, "captions", index).captions, True) for p in filtered]
    return layers


def _json_files(folder: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` below ``folder``, sorted, leaving out dot-hidden ones."""
    found = (p for p in folder.glob(pattern) if p.is_file())
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _read_kind(path: Path, kind: FileKind, index: TextIndex) -> CaptionFile:
    parsed = read_caption_file(path)
    if parsed.kind != kind:
        expected = "identity id -> [str, ...]" if kind == "id_map" else f"image path -> {_CAPTION_FORM}"
        raise DatasetError(f"file holds the other sidecar format; expected {expected}", path=str(path))
    index.sources.append(str(path))
    return parsed


def _merge(old: Caption | None, new: Caption, aug_only: bool) -> Caption:
    if old is None:
        return new
    if aug_only:
        return Caption(old.description, new.aug_description or old.aug_description)
    return Caption(new.description, new.aug_description or old.aug_description)


def match_key(key: str, rels: set[str]) -> str | None:
    """The longest suffix of the sidecar ``key`` (split at ``/``) that is one of ``rels``, if any."""
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    for start in range(len(parts)):
        candidate = "/".join(parts[start:])
        if candidate in rels:
            return candidate
    return None
