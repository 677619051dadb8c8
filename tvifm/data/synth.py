"""SynthTri: a procedural tri-modal (visible image, IR image, text) person re-identification dataset.

:func:`generate` writes SynthTri in the SYSU-MM01 layout plus the Tri- text sidecars, so the real loaders
read it::

    ROOT/camN/PPPP/NNNN.jpg                       N = 1..6; visible cams 1, 2 (indoor), 4, 5 (outdoor),
                                                  IR cams 3 (indoor), 6 (outdoor)
    ROOT/exp/{train,val,test}_id.txt              one comma-separated line of identity numbers
    ROOT/Text/Blip_RGB/caption_dict_Blip_RGB.json {"cam1/0001/0001.jpg": {"description": ...}}
    ROOT/Text/Blip_RGB/id_caption_map_Blip_RGB.json {"1": [captions of that identity's images]}
    ROOT/Text/Blip_IR/...                         the same for IR images, colour-free captions
    ROOT/attributes.json                          ground-truth attributes per identity
    ROOT/synthtri.json                            generator version, arguments, counts
    ROOT/contact_sheet.png                        a few families side by side, for people to look at

Identities come in *families* of 2-4 that share every captioned colour-free attribute (gender, build,
hair length and style, garment types, sleeves, pattern, shoes, bag and hat types, skin tone) and differ
in colours (the upper garment colour always differs within a family). Each identity also has its own
:class:`~tvifm.data.synth_render.Physique` (body proportions, a print on the upper garment) that both
cameras see and no caption names. IR images are rendered without colours, so in IR relatives differ
only by their physique, which is subtle at the default resolution: colour is the strong identity cue
that only the visible images and the visible captions carry, as on real night-time data.

Captions imitate a captioner rather than an oracle (:mod:`tvifm.data.synth_text`): each one omits some
attributes and now and then names a wrong but similar colour or garment. Families never straddle
splits. Splits follow SYSU-MM01's proportions (296/99/96 of 491 identities).

Output is a pure function of the arguments: the same arguments and seed give byte-identical files
(whatever the number of worker processes: every image has its own random stream).
Generating into a directory that already holds a complete SynthTri made with the same arguments does
nothing (the existing dataset is reused); one left incomplete by an interrupted run with the same
arguments is overwritten. Any other non-empty directory is refused.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from tvifm.data.synth_render import (
    NEUTRAL,
    Physique,
    SheetEntry,
    contact_sheet,
    render_ir,
    render_visible,
    sample_physique,
    sample_pose,
)
from tvifm.data.synth_text import caption
from tvifm.errors import ConfigError, DatasetError

GENERATOR_VERSION = "2"
DEFAULT_IDS = 240
DEFAULT_IMAGE_SIZE = (96, 48)
DEFAULT_IMAGES_PER_CAM = (4, 5)  # (per visible camera, per IR camera)
MIN_IMAGE_SIZE = (32, 16)
MIN_IDS = 8
JPEG_QUALITY = 92

VISIBLE_CAMS = (1, 2, 4, 5)
IR_CAMS = (3, 6)
SPLITS = ("train", "val", "test")
SPLIT_SHARES = {"train": 296, "val": 99, "test": 96}  # SYSU-MM01 identities per split

COLOURS = ("black", "white", "red", "blue", "green", "yellow", "grey", "brown", "pink", "purple")
HAIR_COLOURS = ("black", "brown", "blonde", "grey")

MANIFEST = "synthtri.json"
ATTRIBUTES = "attributes.json"
CONTACT_SHEET = "contact_sheet.png"
CAPTIONS_RGB = "Text/Blip_RGB/caption_dict_Blip_RGB.json"
CAPTIONS_IR = "Text/Blip_IR/caption_dict_Blip_IR.json"
ID_MAP_RGB = "Text/Blip_RGB/id_caption_map_Blip_RGB.json"
ID_MAP_IR = "Text/Blip_IR/id_caption_map_Blip_IR.json"


@dataclass(frozen=True)
class Shape:
    """The colour-free attributes of an identity: everything an IR camera can see."""

    gender: str  # man | woman
    build: str  # slim | average | heavy
    hair_length: str  # short | shoulder-length | long
    hair_style: str  # straight | curly | ponytail
    upper_type: str  # t-shirt | shirt | jacket | hoodie | coat
    upper_sleeve: str  # short | long
    upper_pattern: str  # plain | striped
    lower_type: str  # jeans | trousers | shorts | skirt
    shoes_type: str  # sneakers | casual | boots | sandals
    bag: str  # none | backpack | handbag
    hat: str  # none | cap


@dataclass(frozen=True)
class Colours:
    """The colours of an identity (``None`` for an item it does not have); visible images only."""

    hair: str
    upper: str
    lower: str
    shoes: str
    bag: str | None
    hat: str | None
    skin: int  # index of the skin tone, shared by the whole family


@dataclass(frozen=True)
class Identity:
    """One SynthTri identity."""

    pid: int
    family: int
    split: str
    shape: Shape
    colours: Colours
    physique: Physique = NEUTRAL

    def attributes(self) -> dict[str, Any]:
        """Ground-truth attributes as written to ``attributes.json`` (the physique under ``physique``)."""
        c = self.colours
        colours = {
            "hair_colour": c.hair,
            "upper_colour": c.upper,
            "lower_colour": c.lower,
            "shoes_colour": c.shoes,
            "bag_colour": c.bag,
            "hat_colour": c.hat,
            "skin_tone": c.skin,
        }
        extra = {"family": self.family, "split": self.split, "physique": asdict(self.physique)}
        return {**asdict(self.shape), **colours, **extra}


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote (or found already written) under ``root``."""

    root: Path
    train_ids: int
    val_ids: int
    test_ids: int
    visible_images: int
    ir_images: int
    captions: int
    reused: bool = False

    @property
    def ids(self) -> int:
        """Number of identities over all splits."""
        return self.train_ids + self.val_ids + self.test_ids

    @property
    def paths(self) -> dict[str, Path]:
        """The dataset's metadata files by role."""
        names = {
            "manifest": MANIFEST,
            "attributes": ATTRIBUTES,
            "contact_sheet": CONTACT_SHEET,
            "captions_rgb": CAPTIONS_RGB,
            "captions_ir": CAPTIONS_IR,
            "id_captions_rgb": ID_MAP_RGB,
            "id_captions_ir": ID_MAP_IR,
        }
        names |= {f"{split}_ids": f"exp/{split}_id.txt" for split in SPLITS}
        return {role: self.root / rel for role, rel in names.items()}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (what ``tvifm data synth`` prints)."""
        return {
            "root": str(self.root),
            "ids": self.ids,
            "train_ids": self.train_ids,
            "val_ids": self.val_ids,
            "test_ids": self.test_ids,
            "visible_images": self.visible_images,
            "ir_images": self.ir_images,
            "captions": self.captions,
            "reused": self.reused,
            "paths": {k: str(v) for k, v in self.paths.items()},
        }


# ----------------------------------------------------------------------------------------------------
# Arguments.


def parse_image_size(text: str) -> tuple[int, int]:
    """Parse ``"HEIGHTxWIDTH"`` (e.g. ``"96x48"``) into ``(height, width)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise ConfigError(f"bad image size {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 96x48")
    return check_image_size((int(match[1]), int(match[2])))


def check_image_size(size: Iterable[int]) -> tuple[int, int]:
    """Validate a (height, width) pair for SynthTri and return it as a tuple."""
    values = tuple(size)
    if len(values) != 2 or not all(_is_int(v) for v in values):
        raise ConfigError(f"bad image size {values!r}: expected (height, width) integers")
    h, w = int(values[0]), int(values[1])
    if h < MIN_IMAGE_SIZE[0] or w < MIN_IMAGE_SIZE[1]:
        raise ConfigError(
            f"image size {h}x{w} too small: SynthTri needs at least {MIN_IMAGE_SIZE[0]}x{MIN_IMAGE_SIZE[1]}"
        )
    return h, w


@dataclass(frozen=True)
class _Args:
    ids: int
    seed: int
    image_size: tuple[int, int]
    images_per_cam: tuple[int, int]

    def as_json(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "seed": self.seed,
            "image_size": list(self.image_size),
            "images_per_cam": {"visible": self.images_per_cam[0], "ir": self.images_per_cam[1]},
        }


def _check_args(ids: int, seed: int, image_size: Iterable[int], images_per_cam: int | Iterable[int]) -> _Args:
    if _is_int(images_per_cam):
        per_cam: tuple[Any, ...] = (images_per_cam, images_per_cam)
    else:
        per_cam = tuple(images_per_cam) if isinstance(images_per_cam, list | tuple) else ()
    if len(per_cam) != 2 or not all(_is_int(n) and n >= 1 for n in per_cam):
        raise ConfigError(
            "images_per_cam must be a positive integer or a (visible, ir) pair of positive integers, "
            f"got {images_per_cam!r}"
        )
    if not _is_int(ids) or ids < MIN_IDS:
        raise ConfigError(f"ids must be an integer >= {MIN_IDS}, got {ids!r}")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    sizes = (int(per_cam[0]), int(per_cam[1]))
    return _Args(ids=int(ids), seed=int(seed), image_size=check_image_size(image_size), images_per_cam=sizes)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


# ----------------------------------------------------------------------------------------------------
# Identities.


def split_sizes(ids: int) -> dict[str, int]:
    """Identities per split, in SYSU-MM01's proportions."""
    total = sum(SPLIT_SHARES.values())
    val = round(ids * SPLIT_SHARES["val"] / total)
    test = round(ids * SPLIT_SHARES["test"] / total)
    return {"train": ids - val - test, "val": val, "test": test}


def sample_identities(ids: int, seed: int = 0) -> list[Identity]:
    """The identities of a SynthTri of ``ids`` identities: pids 1..ids, grouped in families."""
    rng = np.random.default_rng([seed, 0x5E7])
    plan = [(split, size) for split, n in split_sizes(ids).items() for size in _family_sizes(n, rng)]
    order = rng.permutation(len(plan))
    people: list[Identity] = []
    seen: set[Shape] = set()
    for family, index in enumerate(order):
        split, size = plan[int(index)]
        shape = _unique_shape(rng, seen)
        for colours in _family_colours(size, shape, rng):
            pid = len(people) + 1
            physique = sample_physique(np.random.default_rng([seed, 0xB0D, pid]))
            people.append(Identity(pid, family, split, shape, colours, physique))
    return people


def _family_sizes(n: int, rng: np.random.Generator) -> list[int]:
    sizes: list[int] = []
    while n > 0:
        options = [s for s in (2, 3, 4) if s == n or n - s >= 2] or [n]
        size = int(rng.choice(options))
        sizes.append(size)
        n -= size
    return sizes


def _choice(rng: np.random.Generator, options: dict[str, float]) -> str:
    names = list(options)
    weights = np.array(list(options.values()))
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _unique_shape(rng: np.random.Generator, seen: set[Shape]) -> Shape:
    for _ in range(1000):
        shape = _sample_shape(rng)
        if shape not in seen:
            seen.add(shape)
            return shape
    raise ConfigError("too many identities: cannot draw another distinct SynthTri family")


# Relative frequencies of the colour-free attributes.
_HAIR_LENGTH = {
    "man": {"short": 8, "shoulder-length": 1.5, "long": 0.5},
    "woman": {"short": 2, "shoulder-length": 3.5, "long": 4.5},
}
_HAIR_STYLE = {"short": {"straight": 3, "curly": 1}, "other": {"straight": 4.5, "curly": 2, "ponytail": 3.5}}
_SLEEVE = {"t-shirt": {"short": 3, "long": 1}, "shirt": {"short": 1, "long": 1}, "other": {"long": 1}}
_LOWER = {
    "man": {"jeans": 4, "trousers": 3.5, "shorts": 2.5},
    "woman": {"jeans": 3, "trousers": 2.5, "shorts": 2, "skirt": 2.5},
}


def _sample_shape(rng: np.random.Generator) -> Shape:
    gender = _choice(rng, {"man": 1, "woman": 1})
    hair_length = _choice(rng, _HAIR_LENGTH[gender])
    upper_type = _choice(rng, {"t-shirt": 3, "shirt": 2, "jacket": 2, "hoodie": 1.5, "coat": 1.5})
    return Shape(
        gender=gender,
        build=_choice(rng, {"slim": 3.5, "average": 4, "heavy": 2.5}),
        hair_length=hair_length,
        hair_style=_choice(rng, _HAIR_STYLE.get(hair_length, _HAIR_STYLE["other"])),
        upper_type=upper_type,
        upper_sleeve=_choice(rng, _SLEEVE.get(upper_type, _SLEEVE["other"])),
        upper_pattern=_choice(rng, {"plain": 7, "striped": 3}),
        lower_type=_choice(rng, _LOWER[gender]),
        shoes_type=_choice(rng, {"sneakers": 3.5, "casual": 3, "boots": 2, "sandals": 1.5}),
        bag=_choice(rng, {"none": 4.5, "backpack": 3, "handbag": 2.5}),
        hat=_choice(rng, {"none": 3, "cap": 1}),
    )


def _family_colours(size: int, shape: Shape, rng: np.random.Generator) -> list[Colours]:
    uppers = rng.choice(len(COLOURS), size=size, replace=False)
    skin = int(rng.integers(4))
    hair_p = np.array([0.45, 0.3, 0.15, 0.1])
    members = []
    for upper in uppers:
        hair = HAIR_COLOURS[int(rng.choice(len(HAIR_COLOURS), p=hair_p))]
        lower, shoes, bag, hat = (COLOURS[int(i)] for i in rng.integers(len(COLOURS), size=4))
        members.append(
            Colours(
                hair=hair,
                upper=COLOURS[int(upper)],
                lower=lower,
                shoes=shoes,
                bag=bag if shape.bag != "none" else None,
                hat=hat if shape.hat != "none" else None,
                skin=skin,
            )
        )
    return members


# ----------------------------------------------------------------------------------------------------
# Writing.


def generate(
    root: str | Path,
    ids: int = DEFAULT_IDS,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    images_per_cam: int | tuple[int, int] = DEFAULT_IMAGES_PER_CAM,
    progress: bool = True,
    workers: int | None = None,
) -> SynthSummary:
    """Generate SynthTri under ``root`` (see the module docstring for layout and reuse rules).

    ``image_size`` is (height, width); ``images_per_cam`` is the number of images of every identity in
    every camera, one number or (per visible camera, per IR camera). ``workers`` processes render the
    images (default: up to 2, the CPU count); the output does not depend on it.
    """
    args = _check_args(ids, seed, image_size, images_per_cam)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if not _is_int(workers) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    out = Path(root)
    previous = _previous_manifest(out, args)
    if previous is not None and previous.get("complete") is True:
        return _summary(out, previous["counts"], reused=True)
    people = sample_identities(args.ids, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / MANIFEST, _manifest(args, counts=None))
    captions = _write_images(out, people, args, progress, workers)
    _write_splits(out, people)
    _write_json(out / ATTRIBUTES, {str(p.pid): p.attributes() for p in people})
    _write_captions(out, people, captions)
    _write_contact_sheet(out, people, captions)
    counts = _counts(people, captions)
    _write_json(out / MANIFEST, _manifest(args, counts=counts))
    return _summary(out, counts, reused=False)


def _previous_manifest(root: Path, args: _Args) -> dict[str, Any] | None:
    """The manifest of a previous SynthTri with the same arguments in ``root``; refuse anything else."""
    if root.exists() and not root.is_dir():
        raise DatasetError("SynthTri root exists and is not a directory", path=str(root))
    if not root.exists() or not any(root.iterdir()):
        return None
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("generator") != "SynthTri":
        raise DatasetError(
            "refusing to generate SynthTri into a non-empty directory that is not a SynthTri dataset; "
            "choose an empty or new directory",
            path=str(root),
        )
    same = manifest.get("version") == GENERATOR_VERSION and manifest.get("args") == args.as_json()
    if not same:
        raise DatasetError(
            f"directory holds a SynthTri generated with other arguments ({manifest.get('args')}, version "
            f"{manifest.get('version')}); delete it or choose another directory to generate {args.as_json()}",
            path=str(root),
        )
    return manifest


def _manifest(args: _Args, counts: dict[str, int] | None) -> dict[str, Any]:
    return {
        "generator": "SynthTri",
        "version": GENERATOR_VERSION,
        "seed": args.seed,
        "args": args.as_json(),
        "complete": counts is not None,
        "counts": counts,
        "cameras": {"visible": list(VISIBLE_CAMS), "ir": list(IR_CAMS)},
    }


def _counts(people: list[Identity], captions: dict[str, dict[str, str]]) -> dict[str, int]:
    per_split = {f"{split}_ids": sum(p.split == split for p in people) for split in SPLITS}
    return {
        "ids": len(people),
        **per_split,
        "families": len({p.family for p in people}),
        "visible_images": len(captions["visible"]),
        "ir_images": len(captions["ir"]),
        "captions": len(captions["visible"]) + len(captions["ir"]),
    }


def _summary(root: Path, counts: dict[str, int], reused: bool) -> SynthSummary:
    return SynthSummary(
        root=root,
        train_ids=counts["train_ids"],
        val_ids=counts["val_ids"],
        test_ids=counts["test_ids"],
        visible_images=counts["visible_images"],
        ir_images=counts["ir_images"],
        captions=counts["captions"],
        reused=reused,
    )


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")


def image_rel(cam: int, pid: int, index: int) -> str:
    """The SYSU-MM01 path of image ``index`` (from 1) of identity ``pid`` in camera ``cam``."""
    return f"cam{cam}/{pid:04d}/{index:04d}.jpg"


def _write_images(
    root: Path, people: list[Identity], args: _Args, progress: bool, workers: int
) -> dict[str, dict[str, str]]:
    """Render, save and caption every image; returns {"visible"|"ir": {rel path: caption}}."""
    captions: dict[str, dict[str, str]] = {"visible": {}, "ir": {}}
    jobs = [(root, person, args) for person in people]
    with _ordered_map(min(workers, len(jobs))) as run:
        done = run(_write_identity, jobs)
        for written in tqdm(done, total=len(jobs), desc="SynthTri", unit="id", disable=not progress):
            for modality, rel, text in written:
                captions[modality][rel] = text
    return captions


def _write_identity(job: tuple[Path, Identity, _Args]) -> list[tuple[str, str, str]]:
    """Write every image of one identity; returns (modality, rel path, caption) per image."""
    root, person, args = job
    written = []
    for cam in sorted(VISIBLE_CAMS + IR_CAMS):
        visible = cam in VISIBLE_CAMS
        for index in range(1, args.images_per_cam[0 if visible else 1] + 1):
            rel = image_rel(cam, person.pid, index)
            pixels, text = render_image(person, cam, index, args.seed, args.image_size)
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="RGB").save(path, format="JPEG", quality=JPEG_QUALITY)
            written.append(("visible" if visible else "ir", rel, text))
    return written


@contextmanager
def _ordered_map(workers: int) -> Iterator[Callable[..., Iterable[Any]]]:
    """``map``, or an order-preserving map over ``workers`` forked processes (joined on exit)."""
    if workers <= 1 or multiprocessing.current_process().daemon:
        yield map
        return
    pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        yield functools.partial(pool.imap, chunksize=2)
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def render_image(
    person: Identity, cam: int, index: int, seed: int, size: tuple[int, int]
) -> tuple[np.ndarray, str]:
    """Pixels (H, W, 3 uint8) and caption of image ``index`` of ``person`` in camera ``cam``."""
    rng = np.random.default_rng([seed, person.pid, cam, index])
    text_rng = np.random.default_rng([seed, person.pid, cam, index, 1])
    pose = sample_pose(rng, cam)
    if cam in VISIBLE_CAMS:
        pixels = render_visible(person.shape, person.colours, pose, cam, size, rng, person.physique)
        return pixels, caption(person.shape, person.colours, text_rng)
    pixels = render_ir(person.shape, pose, cam, size, rng, person.physique)
    return pixels, caption(person.shape, None, text_rng)


def _write_splits(root: Path, people: list[Identity]) -> None:
    for split in SPLITS:
        pids = sorted(p.pid for p in people if p.split == split)
        path = root / "exp" / f"{split}_id.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(",".join(str(pid) for pid in pids) + "\n", encoding="utf-8")


def _write_captions(root: Path, people: list[Identity], captions: dict[str, dict[str, str]]) -> None:
    files = (("visible", CAPTIONS_RGB, ID_MAP_RGB), ("ir", CAPTIONS_IR, ID_MAP_IR))
    for modality, dict_rel, map_rel in files:
        texts = captions[modality]
        _write_json(root / dict_rel, {rel: {"description": text} for rel, text in texts.items()})
        by_id: dict[str, list[str]] = {str(p.pid): [] for p in people}
        for rel, text in texts.items():
            by_id[str(int(rel.split("/")[1]))].append(text)
        _write_json(root / map_rel, by_id)


def _write_contact_sheet(
    root: Path, people: list[Identity], captions: dict[str, dict[str, str]], families: int = 3
) -> None:
    """Whole families (visible cam 1 and IR cam 3, first image each), one family per row."""
    rows: dict[int, list[SheetEntry]] = {}
    for person in people:
        if person.family not in rows and len(rows) == families:
            break
        vis, ir = image_rel(VISIBLE_CAMS[0], person.pid, 1), image_rel(IR_CAMS[0], person.pid, 1)
        title = f"id {person.pid} (family {person.family}, {person.split})"
        entry = SheetEntry(title, root / vis, root / ir, captions["visible"][vis], captions["ir"][ir])
        rows.setdefault(person.family, []).append(entry)
    contact_sheet(list(rows.values()), root / CONTACT_SHEET)
