"""tvifm.experiments.captions on a small SynthTri: the images of a split, the chance level of each
attribute, the sidecar captions scored against the ground truth, a copy to caption again and what
rephrasings add."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tvifm.captioning.quality import COLOUR_ATTRIBUTES, SHAPE_ATTRIBUTES
from tvifm.config import load_config
from tvifm.data.base import Sample
from tvifm.data.registry import load_dataset
from tvifm.errors import TvifmError
from tvifm.experiments import captions


def test_split_images_are_the_visible_gallery_and_ir_queries_of_a_split(small_synth: Path) -> None:
    splits = load_dataset("synth", small_synth)
    visible, ir = captions.split_images(splits, "test")
    assert visible and ir
    assert {s.modality for s in visible} == {"visible"} and {s.modality for s in ir} == {"ir"}
    assert {s.pid for s in (*visible, *ir)} <= set(splits.test_ids)
    val_visible, val_ir = captions.split_images(splits, "val")
    assert val_visible == list(splits.val_visible) and val_ir == list(splits.val_ir)
    with pytest.raises(TvifmError, match="unknown split 'train'"):
        captions.split_images(splits, "train")


def test_majority_baseline_is_the_share_of_the_most_frequent_value() -> None:
    truth = {1: {"hair_colour": "black"}, 2: {"hair_colour": "black"}, 3: {"hair_colour": "red"}}
    pids = (1, 2, 2, 3)
    samples = [Sample(path=f"{p}.jpg", rel=f"{p}.jpg", pid=p, cam=1, modality="visible") for p in pids]
    baseline = captions.majority_baseline(samples, truth)
    assert baseline["hair_colour"] == pytest.approx(0.75)  # black 3 of 4 images
    assert baseline["hat_colour"] == 0.0  # nobody has the attribute


def test_sidecar_captions_are_scored_per_modality(small_synth: Path) -> None:
    quality = captions.sidecar_caption_quality(small_synth)
    rgb, ir = quality["rgb"], quality["ir"]
    assert rgb["captions"] > 0 and ir["captions"] > 0
    assert set(rgb["accuracy"]) <= {*COLOUR_ATTRIBUTES, *SHAPE_ATTRIBUTES}
    assert set(ir["accuracy"]) <= set(SHAPE_ATTRIBUTES)  # IR captions are not scored on colours
    assert all(0.0 <= v <= 1.0 for v in (*rgb["accuracy"].values(), *ir["accuracy"].values()))
    assert ir["colour_word_rate"] == 0.0  # SynthTri's IR captions name no colour


def test_a_captioned_copy_drops_the_captions_and_rephrasings_are_measured(
    small_synth: Path, tmp_path: Path
) -> None:
    from tvifm.text.augment import augment_sidecars

    copy = captions.captioned_copy(small_synth, tmp_path / "copy")
    assert (copy / "attributes.json").is_file() and not (copy / "Text").exists()
    assert captions.captioned_copy(small_synth, copy) == copy  # already there: left alone

    root = tmp_path / "augmented"
    shutil.copytree(small_synth, root)
    augment_sidecars(str(root), "synth")
    cfg = load_config("tiny", [f"data.root={root}"])
    figures = captions.rephrasing_figures(cfg, tri_regdb=tmp_path / "no-tri-regdb")
    assert list(figures) == [captions.SYNTH_NOVELTY]  # no published captions beside this checkout
    synth = figures[captions.SYNTH_NOVELTY]
    assert synth["people"] == len(load_dataset("synth", root).train_ids)
    assert 0.0 <= synth["new_words"] <= 1.0 and 0.0 < synth["caption_vs_rephrasing"] <= 1.0
