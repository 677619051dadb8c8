"""tvifm.experiments.presets and the ablation's presets: every variant is a config of its own that extends
tiny, differs from it only where the variant says, and is what the ablation trains."""

from __future__ import annotations

from typing import Any

import pytest

from tvifm.config import load_config, parse_override, to_dict
from tvifm.errors import ConfigError
from tvifm.experiments import ablation as abl
from tvifm.experiments.presets import (
    as_overrides,
    experiment_presets,
    load_preset,
    preset_layer,
    preset_path,
    with_layer,
)

SCHEDULE_KEYS = {"base.epochs", "base.milestones", "joint.epochs", "joint.milestones"}
STAGE2_KEYS = {"joint.epochs", "joint.milestones"}


def _differences(a: Any, b: Any, prefix: str = "") -> set[str]:
    """Dotted keys whose values differ between two nested mappings."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {d for k in set(a) | set(b) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")}
    return set() if a == b else {prefix.rstrip(".")}


def _diff_from(preset: str, base: str) -> set[str]:
    base_cfg = load_config(base) if base == "tiny" else load_preset(base)
    return _differences(to_dict(load_preset(preset)), to_dict(base_cfg))


def test_every_stage2_training_of_the_ablation_has_a_preset() -> None:
    names = {abl.preset_name(key) for key in (*abl.VARIANTS, *abl.CANDIDATES)}
    assert names | {abl.SCHEDULE} <= set(experiment_presets())
    for key in (*abl.VARIANTS, *abl.CANDIDATES):
        assert preset_path(abl.preset_name(key)).is_file()


def test_the_schedule_preset_extends_tiny_and_only_lengthens_both_stages() -> None:
    cfg, tiny = load_preset("ablation"), load_config("tiny")
    assert _diff_from("ablation", "tiny") == SCHEDULE_KEYS
    assert cfg.base.epochs > tiny.base.epochs and cfg.joint.epochs > tiny.joint.epochs
    assert max(cfg.base.milestones) < cfg.base.epochs and max(cfg.joint.milestones) < cfg.joint.epochs
    assert cfg.name == tiny.name  # the ablation's runs are tiny-preset runs with a longer schedule


@pytest.mark.parametrize(
    ("key", "differs"),
    [
        ("fusion-only", {"joint.streams", "joint.text_aug_prob"}),
        ("joint", {"joint.text_aug_prob"}),
        ("joint-aug", set()),  # the tiny preset already rephrases with probability 0.5
    ],
)
def test_each_variant_differs_from_the_schedule_only_in_what_it_is_about(key: str, differs: set[str]) -> None:
    assert _diff_from(abl.preset_name(key), "ablation") == differs
    assert _diff_from(abl.preset_name(key), "tiny") == SCHEDULE_KEYS | differs


def test_the_rows_train_what_their_names_say() -> None:
    fusion_only, joint, joint_aug = (load_preset(abl.preset_name(k)) for k in abl.VARIANTS)
    assert fusion_only.joint.streams == ["visible", "fusion"]
    assert fusion_only.joint.text_aug_prob == joint.joint.text_aug_prob == 0.0
    assert "visible_text" in joint.joint.streams and joint.joint.streams == joint_aug.joint.streams
    assert joint_aug.joint.text_aug_prob == 0.5


@pytest.mark.parametrize("key", abl.VARIANTS)
def test_a_12_epoch_candidate_is_its_variant_with_the_previous_stage2(key: str) -> None:
    short, long = load_preset(abl.preset_name(f"{key}-12")), load_preset(abl.preset_name(key))
    assert _diff_from(abl.preset_name(f"{key}-12"), abl.preset_name(key)) == STAGE2_KEYS
    assert short.joint.epochs == 12 and short.joint.milestones == [10] and long.joint.epochs == 36


def test_the_five_stream_candidate_trains_every_stream_of_the_design() -> None:
    cfg = load_preset(abl.preset_name("joint-five-12"))
    assert _diff_from(abl.preset_name("joint-five-12"), abl.preset_name("joint-12")) == {"joint.streams"}
    assert set(cfg.joint.streams) == {"visible", "visible_ca", "ir", "fusion", "visible_text"}


@pytest.mark.parametrize("key", (*abl.VARIANTS, *abl.CANDIDATES))
def test_a_variant_trained_by_the_ablation_is_its_preset(key: str, tmp_path) -> None:
    saved = abl.save_base_config(abl.ablation_config("tiny"), tmp_path)
    preset = load_preset(abl.preset_name(key), ["seed=2"])
    assert to_dict(abl.variant_config(saved, key, 2)) == to_dict(preset)


def test_the_ablation_layers_its_schedule_over_another_config_and_the_command_line(tmp_path) -> None:
    cfg = abl.ablation_config("paper", ["joint.lr=0.01", "base.epochs=5"])
    paper = load_config("paper")
    assert cfg.backbone == paper.backbone and cfg.joint.epochs == 36 and cfg.joint.lr == 0.01
    assert cfg.base.epochs == 5  # the command line comes after the schedule
    saved = abl.save_base_config(cfg, tmp_path)
    variant = abl.variant_config(saved, "fusion-only", 1)
    assert variant.seed == 1 and variant.joint.lr == 0.01 and variant.joint.streams == ["visible", "fusion"]
    assert variant.backbone == paper.backbone
    assert abl.save_base_config(abl.ablation_config("tiny"), tmp_path) == saved
    assert abl.variant_config(saved, "joint", 0).backbone == paper.backbone  # saved once, then kept


def test_a_layer_as_overrides_sets_the_same_values() -> None:
    layer = preset_layer("ablation-fusion-only-12", "tiny")
    overrides = as_overrides(layer)
    keys = {parse_override(o)[0] for o in overrides}
    assert keys == SCHEDULE_KEYS | {"joint.streams", "joint.text_aug_prob"}
    assert to_dict(load_config("tiny", overrides)) == to_dict(load_preset("ablation-fusion-only-12"))
    assert to_dict(with_layer(load_config("tiny"), layer)) == to_dict(load_preset("ablation-fusion-only-12"))
    assert " ".join(abl.schedule_overrides()).startswith("base.epochs=40 base.milestones=[32]")
    assert abl.previous_stage2() == ["joint.epochs=12", "joint.milestones=[10]"]


def test_unknown_presets_and_broken_chains_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown experiment preset 'ablation-nope'.*ablation-joint"):
        preset_path("ablation-nope")
    with pytest.raises(ConfigError, match="'ablation-fusion-only' extends 'tiny', not 'ablation-joint'"):
        preset_layer("ablation-fusion-only", "ablation-joint")
    with pytest.raises(ConfigError, match="extends 'tiny', not 'paper'"):
        preset_layer("ablation", "paper")
