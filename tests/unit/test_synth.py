"""SynthTri: SYSU-MM01 layout, Tri- caption sidecars, families, determinism, and colour that IR cannot see."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict, replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tvifm.data.synth import (
    COLOURS,
    Identity,
    Shape,
    generate,
    parse_image_size,
    sample_identities,
)
from tvifm.data.synth_render import EMBLEMS, render_ir, render_visible, sample_pose
from tvifm.data.synth_text import OMIT, caption
from tvifm.errors import ConfigError, DatasetError

VISIBLE_CAMS, IR_CAMS = (1, 2, 4, 5), (3, 6)
SIZE = (96, 48)
PER_CAM = (2, 2)  # visible, IR
IDS = 96
# Colour words a colour filter would remove; deliberately broader than SynthTri's palette.
COLOUR_WORDS = {
    *("black", "white", "red", "blue", "green", "yellow", "grey", "gray", "brown", "pink", "purple"),
    *("orange", "blonde", "blond", "navy", "beige", "maroon", "violet", "cyan", "khaki", "golden", "gold"),
    *("silver", "dark", "light", "colour", "color", "coloured", "colored", "multicolor", "multicolour"),
}
COLOUR_KEYS = ("hair_colour", "upper_colour", "lower_colour", "shoes_colour", "bag_colour", "hat_colour")
LOWER_WORDS = {"jeans": {"jeans"}, "trousers": {"trousers", "pants"}}
LOWER_WORDS |= {"shorts": {"shorts"}, "skirt": {"skirt"}}
SHAPE_KEYS = (
    *("gender", "build", "hair_length", "hair_style", "upper_type", "upper_sleeve", "upper_pattern"),
    *("lower_type", "shoes_type", "bag", "hat", "skin_tone"),
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthtri") / "root"
    generate(root, ids=IDS, seed=0, image_size=SIZE, images_per_cam=PER_CAM, progress=False)
    return root


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _images(root: Path, cams: tuple[int, ...]) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for cam in cams for p in root.glob(f"cam{cam}/*/*.jpg"))


# ----------------------------------------------------------------------------------------------------
# Layout and counts.


def test_images_follow_the_sysu_layout(data: Path) -> None:
    ids = {f"{pid:04d}" for pid in range(1, IDS + 1)}
    for cam in (*VISIBLE_CAMS, *IR_CAMS):
        folders = {p.name for p in (data / f"cam{cam}").iterdir()}
        assert folders == ids
        expected = [f"{i:04d}.jpg" for i in range(1, PER_CAM[cam in IR_CAMS] + 1)]
        for folder in folders:
            assert sorted(p.name for p in (data / f"cam{cam}" / folder).iterdir()) == expected
    with Image.open(data / "cam1/0001/0001.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (SIZE[1], SIZE[0])


def test_ir_images_are_three_channel_grey(data: Path) -> None:
    for rel in _images(data, IR_CAMS)[:40]:
        pixels = np.asarray(Image.open(data / rel))
        assert pixels.shape == (*SIZE, 3)
        assert (pixels == pixels[..., :1]).all()  # R == G == B
    visible = np.asarray(Image.open(data / "cam1/0001/0001.jpg")).astype(int)
    assert np.abs(visible[..., 0] - visible[..., 2]).max() > 20


def test_split_files_are_one_sysu_line_of_disjoint_ids_covering_all(data: Path) -> None:
    splits = {}
    for split in ("train", "val", "test"):
        text = (data / "exp" / f"{split}_id.txt").read_text()
        assert re.fullmatch(r"[1-9]\d*(,[1-9]\d*)*\n?", text), text
        splits[split] = [int(x) for x in text.split(",")]
    everything = [pid for ids in splits.values() for pid in ids]
    assert len(everything) == len(set(everything)) and set(everything) == set(range(1, IDS + 1))
    for split, share in (("train", 296), ("val", 99), ("test", 96)):  # SYSU-MM01 proportions
        assert abs(len(splits[split]) - IDS * share / 491) <= 1.5


def test_summary_and_manifest_count_what_is_on_disk(tmp_path: Path) -> None:
    summary = generate(
        tmp_path / "d", ids=10, seed=4, image_size=(48, 24), images_per_cam=(3, 1), progress=False
    )
    visible, ir = _images(summary.root, VISIBLE_CAMS), _images(summary.root, IR_CAMS)
    assert (summary.visible_images, summary.ir_images) == (len(visible), len(ir)) == (10 * 4 * 3, 10 * 2)
    assert summary.captions == len(visible) + len(ir)
    assert summary.ids == summary.train_ids + summary.val_ids + summary.test_ids == 10
    assert all(path.is_file() for path in summary.paths.values())
    manifest = _json(summary.paths["manifest"])
    assert manifest["seed"] == 4 and manifest["version"] and manifest["complete"] is True
    assert manifest["counts"]["visible_images"] == len(visible)
    with Image.open(summary.paths["contact_sheet"]) as sheet:
        assert sheet.format == "PNG" and sheet.width > 200 and sheet.height > 200


# ----------------------------------------------------------------------------------------------------
# Attributes and families.


def test_attributes_cover_every_identity_and_families_differ_only_in_colour(data: Path) -> None:
    attrs = _json(data / "attributes.json")
    assert set(attrs) == {str(pid) for pid in range(1, IDS + 1)}
    families: dict[int, list[dict]] = defaultdict(list)
    for pid, a in attrs.items():
        assert set(SHAPE_KEYS) | set(COLOUR_KEYS) <= set(a)
        assert a["upper_colour"] in COLOURS and a["lower_colour"] in COLOURS
        assert (a["bag"] == "none") == (a["bag_colour"] is None)
        assert (a["hat"] == "none") == (a["hat_colour"] is None)
        assert str(int(pid)) in (data / "exp" / f"{a['split']}_id.txt").read_text().strip().split(",")
        families[a["family"]].append(a)
    assert all(2 <= len(members) <= 4 for members in families.values())
    shapes = set()
    for members in families.values():
        shape = {tuple(m[k] for k in (*SHAPE_KEYS, "split")) for m in members}
        assert len(shape) == 1  # same colour-free attributes, same split
        assert len({m["upper_colour"] for m in members}) == len(members)
        shapes |= shape
    assert len(shapes) == len(families)  # families are told apart by colour-free attributes


def test_relatives_differ_in_ir_only_by_their_physique_and_strongly_in_visible() -> None:
    people = sample_identities(20, seed=2)
    a, b = next((p, q) for p, q in pairwise(people) if p.family == q.family)
    assert a.shape == b.shape and a.colours != b.colours and a.physique != b.physique
    twin = replace(b, physique=a.physique)  # b with a's body and print: the same in IR as a

    def render(person: Identity, modality: str) -> np.ndarray:
        rng = np.random.default_rng(7)
        if modality == "ir":
            return render_ir(person.shape, sample_pose(rng, 3), 3, SIZE, rng, person.physique).astype(int)
        pose = sample_pose(rng, 1)
        return render_visible(person.shape, person.colours, pose, 1, SIZE, rng, person.physique).astype(int)

    assert np.array_equal(render(a, "ir"), render(twin, "ir"))
    ir_diff = np.abs(render(a, "ir") - render(b, "ir")).max(axis=2)
    vis_diff = np.abs(render(a, "vis") - render(b, "vis")).max(axis=2)
    assert ir_diff.max() > 0  # the physique shows in IR...
    assert (vis_diff > 40).mean() > 3 * max((ir_diff > 40).mean(), 0.01)  # ...far less than colour


def test_every_identity_has_its_own_physique_in_the_attributes(data: Path) -> None:
    attrs = _json(data / "attributes.json")
    physiques = [tuple(sorted(a["physique"].items())) for a in attrs.values()]
    assert len(set(physiques)) == len(physiques)
    assert {dict(p)["emblem"] for p in physiques} == set(EMBLEMS)
    assert sample_identities(12, seed=1) == sample_identities(12, seed=1)


def _shape(**changes: str) -> Shape:
    base = dict(
        gender="man", build="average", hair_length="short", hair_style="straight", upper_type="t-shirt",
        upper_sleeve="short", upper_pattern="plain", lower_type="jeans", shoes_type="sneakers", bag="none",
        hat="none",
    )  # fmt: skip
    return Shape(**{**base, **changes})


def test_ir_garment_heat_follows_garment_thickness() -> None:
    def torso_mean(shape: Shape) -> float:
        values = []
        for seed in range(6):
            rng = np.random.default_rng(seed)
            pose = sample_pose(rng, 3)
            pose = replace(pose, shift=0.0, lean=0.0, back=False, drop=0.03)
            image = render_ir(shape, pose, 3, SIZE, rng)[..., 0].astype(float)
            background = np.median(image[:, :4])
            values.append(image[38:48, 20:28].mean() - background)  # mid-torso minus background
        return float(np.mean(values))

    tshirt = torso_mean(_shape(upper_type="t-shirt"))
    coat = torso_mean(_shape(upper_type="coat", upper_sleeve="long"))
    assert tshirt > coat + 10  # in 0..255 grey levels


def test_every_sampled_attribute_value_renders_and_is_captioned() -> None:
    people = sample_identities(600, seed=5)
    covered: dict[tuple[str, str], Identity] = {}
    for person in people:
        for key, value in asdict(person.shape).items():
            covered.setdefault((key, value), person)
    assert {v for k, v in covered if k == "upper_type"} == {"t-shirt", "shirt", "jacket", "hoodie", "coat"}
    assert {v for k, v in covered if k == "lower_type"} == {"jeans", "trousers", "shorts", "skirt"}
    for person in {id(p): p for p in covered.values()}.values():
        rng = np.random.default_rng(person.pid)
        for cam in (1, 6):
            pose = sample_pose(rng, cam)
            if cam == 1:
                image = render_visible(person.shape, person.colours, pose, cam, SIZE, rng)
            else:
                image = render_ir(person.shape, pose, cam, SIZE, rng)
            assert image.shape == (*SIZE, 3) and image.dtype == np.uint8 and image.std() > 10
        assert caption(person.shape, person.colours, rng).endswith(".")


# ----------------------------------------------------------------------------------------------------
# Captions.


def test_caption_sidecars_key_exactly_the_images(data: Path) -> None:
    for modality, cams in (("RGB", VISIBLE_CAMS), ("IR", IR_CAMS)):
        captions = _json(data / "Text" / f"Blip_{modality}" / f"caption_dict_Blip_{modality}.json")
        assert sorted(captions) == _images(data, cams)
        assert all(isinstance(v["description"], str) and v["description"] for v in captions.values())
        id_map = _json(data / "Text" / f"Blip_{modality}" / f"id_caption_map_Blip_{modality}.json")
        assert set(id_map) == {str(pid) for pid in range(1, IDS + 1)}
        per_id: dict[str, list[str]] = defaultdict(list)
        for rel, value in captions.items():
            per_id[str(int(rel.split("/")[1]))].append(value["description"])
        assert {k: Counter(v) for k, v in id_map.items()} == {k: Counter(v) for k, v in per_id.items()}


def test_exact_captions_name_every_attribute_and_colour() -> None:
    for person in sample_identities(60, seed=3):
        text = caption(person.shape, person.colours, np.random.default_rng(person.pid), noise=False)
        words = _words(text)
        for key in COLOUR_KEYS:
            colour = getattr(person.colours, key.removesuffix("_colour"))
            if colour is not None:
                assert colour in words, (key, text)
        assert LOWER_WORDS[person.shape.lower_type] & words, text
        if person.shape.bag != "none":
            assert {"backpack", "handbag", "bag"} & words, text


def test_visible_captions_are_mostly_right_with_captioner_noise(data: Path) -> None:
    attrs = _json(data / "attributes.json")
    captions = _json(data / "Text/Blip_RGB/caption_dict_Blip_RGB.json")
    named: dict[str, list[bool]] = defaultdict(list)
    for rel, value in captions.items():
        a = attrs[str(int(rel.split("/")[1]))]
        words = _words(value["description"])
        for key in COLOUR_KEYS:
            if a[key] is not None:
                named[key].append(a[key] in words)
        nouns = {"man", "guy", "gentleman"} if a["gender"] == "man" else {"woman", "lady", "girl"}
        assert nouns & words, value["description"]
    rate = {key: float(np.mean(hits)) for key, hits in named.items()}
    # the upper garment is always described, its colour sometimes mistaken; shoes are often left out
    assert 0.75 < rate["upper_colour"] < 0.97, rate
    assert rate["shoes_colour"] < rate["upper_colour"] - 0.2, rate
    assert all(r > 0.4 for r in rate.values()), rate


def test_noisy_captions_leave_items_out_at_the_configured_rates() -> None:
    people = sample_identities(200, seed=4)
    with_bag = [p for p in people if p.shape.bag != "none"]
    texts = [caption(p.shape, None, np.random.default_rng(p.pid)) for p in with_bag]
    bag_named = np.mean([bool({"backpack", "handbag", "bag"} & _words(t)) for t in texts])
    assert abs((1 - bag_named) - OMIT["bag"]) < 0.12


def test_captions_of_one_identity_vary_in_wording(data: Path) -> None:
    id_map = _json(data / "Text/Blip_RGB/id_caption_map_Blip_RGB.json")
    varied = [len(set(texts)) > 1 for texts in id_map.values()]
    assert sum(varied) >= 0.9 * len(varied)


# ----------------------------------------------------------------------------------------------------
# Determinism and the target directory.


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_other_seed_differs(tmp_path: Path) -> None:
    args = dict(ids=8, image_size=(48, 24), images_per_cam=1, progress=False)
    first = _tree(generate(tmp_path / "a", seed=11, workers=1, **args).root)
    second = _tree(generate(tmp_path / "b", seed=11, workers=2, **args).root)  # any process count
    other = _tree(generate(tmp_path / "c", seed=12, **args).root)
    assert first == second
    assert set(other) == set(first)  # same layout...
    changed = [rel for rel in first if first[rel] != other[rel]]
    assert "attributes.json" in changed and sum(rel.endswith(".jpg") for rel in changed) == 8 * 6


def test_refuses_a_non_empty_directory_that_is_not_synthtri(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a SynthTri"):
        generate(tmp_path, ids=8, image_size=(48, 24), images_per_cam=1, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_existing_synthtri_is_reused_with_same_args_and_refused_with_others(tmp_path: Path) -> None:
    args = dict(ids=8, image_size=(48, 24), images_per_cam=1, progress=False)
    first = generate(tmp_path, seed=1, **args)
    before = _tree(tmp_path)
    again = generate(tmp_path, seed=1, **args)
    assert again.reused and not first.reused
    assert (again.visible_images, again.ir_images, again.test_ids) == (
        first.visible_images,
        first.ir_images,
        first.test_ids,
    )
    assert _tree(tmp_path) == before
    with pytest.raises(DatasetError, match="other arguments"):
        generate(tmp_path, seed=2, **args)


def test_parse_image_size() -> None:
    assert parse_image_size("96x48") == (96, 48)
    assert parse_image_size(" 288X144 ") == (288, 144)
    for bad in ("96", "96x", "x48", "axb", "96*48", "-96x48", "96x48x3", ""):
        with pytest.raises(ConfigError, match="HEIGHTxWIDTH"):
            parse_image_size(bad)
    with pytest.raises(ConfigError, match="too small"):
        parse_image_size("8x4")


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    for kwargs in (
        {"ids": 3},
        {"images_per_cam": 0},
        {"images_per_cam": (2, 0)},
        {"seed": -1},
        {"workers": 0},
    ):
        with pytest.raises(ConfigError):
            generate(tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------------
# The key property: upper-garment colour is learnable from visible pixels and not from IR pixels.


def _load(root: Path, cams: tuple[int, ...], labels: dict[int, int]) -> tuple[np.ndarray, ...]:
    rels = _images(root, cams)
    pixels = np.stack([np.asarray(Image.open(root / rel), dtype=np.float32) / 255.0 for rel in rels])
    pids = np.array([int(rel.split("/")[1]) for rel in rels])
    return pixels, np.array([labels[p] for p in pids]), pids


def _histograms(pixels: np.ndarray, levels: int) -> np.ndarray:
    """Per-channel intensity histograms of (N, P, 3) pixels, normalised."""
    q = np.minimum((pixels * levels).astype(np.int64), levels - 1)
    per_channel = [np.stack([np.bincount(row, minlength=levels) for row in q[..., c]]) for c in range(3)]
    return np.concatenate(per_channel, axis=1).astype(np.float32) / pixels.shape[1]


def _features(images: np.ndarray) -> list[np.ndarray]:
    """Feature blocks: every pixel, the joint RGB histogram, fine per-channel histograms of the whole
    image and of its centre (where the torso usually is). Grey images get the very same extractor."""
    n, h, w, _ = images.shape
    flat = images.reshape(n, -1, 3)
    q = np.minimum((flat * 6).astype(np.int64), 5)
    codes = (q[..., 0] * 6 + q[..., 1]) * 6 + q[..., 2]
    joint = np.stack([np.bincount(c, minlength=216) for c in codes]).astype(np.float32) / codes.shape[1]
    centre = images[:, h // 4 : h * 11 // 20, w * 3 // 10 : w * 7 // 10].reshape(n, -1, 3)
    return [images.reshape(n, -1), joint, _histograms(flat, 32), _histograms(centre, 32)]


def _identity_votes(images: np.ndarray, y: np.ndarray, pids: np.ndarray, train: np.ndarray) -> tuple:
    """Ridge-regression classifier on standardised features, trained on the ``train`` images.

    Returns (predicted, true) colour per test identity; an identity's prediction is the class with the
    highest summed score over its images.
    """
    blocks = []
    for block in _features(images):
        mean, std = block[train].mean(0), block[train].std(0) + 1e-3
        blocks.append((block - mean) / std / block.shape[1] ** 0.5)  # every block weighs the same
    x = np.concatenate(blocks, axis=1)
    targets = np.eye(len(COLOURS), dtype=np.float32)[y[train]]
    kernel = x[train] @ x[train].T
    dual = np.linalg.solve(kernel + np.eye(len(kernel), dtype=np.float32), targets - targets.mean(0))
    scores = x[~train] @ (x[train].T @ dual)
    test_pids, test_y = pids[~train], y[~train]
    ids = np.unique(test_pids)
    predicted = np.array([scores[test_pids == pid].sum(0).argmax() for pid in ids])
    return predicted, np.array([test_y[test_pids == pid][0] for pid in ids])


def _p_value(predicted: np.ndarray, true: np.ndarray, rounds: int = 10000) -> float:
    """Permutation test: how often do shuffled labels match the predictions as often as the real ones?"""
    observed = int((predicted == true).sum())
    shuffled = np.random.default_rng(0).permuted(np.tile(true, (rounds, 1)), axis=1)
    return float(((shuffled == predicted).sum(axis=1) >= observed).mean())


def test_upper_colour_is_learnable_from_visible_pixels_but_not_from_ir(data: Path) -> None:
    attrs = _json(data / "attributes.json")
    labels = {int(pid): COLOURS.index(a["upper_colour"]) for pid, a in attrs.items()}
    families = sorted({a["family"] for a in attrs.values()})
    held_out = set(np.random.default_rng(0).permutation(families)[len(families) // 2 :].tolist())

    visible = _load(data, VISIBLE_CAMS, labels)
    luminance = visible[0] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    sets = {
        "visible": visible,
        "ir": _load(data, IR_CAMS, labels),
        "grey visible": (np.repeat(luminance[..., None], 3, axis=3), *visible[1:]),
    }
    results = {}
    for name, (images, y, pids) in sets.items():
        train = np.array([attrs[str(p)]["family"] not in held_out for p in pids])
        predicted, true = _identity_votes(images, y, pids, train)
        results[name] = (float((predicted == true).mean()), _p_value(predicted, true), len(true))

    assert results["ir"][2] >= 40, results  # enough held-out identities for the statistics
    assert results["visible"][0] >= 0.6 and results["visible"][1] < 1e-3, results
    assert results["ir"][1] > 1e-3, results  # not significantly above chance
    # Control: the same test does detect colour in a single-channel image that carries it (luminance).
    assert results["grey visible"][1] < 1e-3, results
