"""The typed config: presets, overrides, validation errors, save/load round trip."""

from __future__ import annotations

import pytest
import yaml

from tvifm.config import (
    Config,
    available_presets,
    config_hash,
    load_config,
    read_saved_config,
    run_settings,
    save_config,
)
from tvifm.errors import ConfigError


def test_presets_ship_tiny_and_paper() -> None:
    assert {"tiny", "paper"} <= set(available_presets())
    tiny, paper = load_config("tiny"), load_config("paper")
    assert tiny.data.dataset == "synth" and tiny.data.image_size == [96, 48]
    assert paper.data.image_size == [288, 144]
    assert (paper.data.ids_per_batch, paper.data.images_per_modality) == (8, 4)


def test_overrides_are_parsed_as_yaml_and_applied() -> None:
    cfg = load_config("tiny", ["data.ids_per_batch=4", "data.image_size=[64, 32]", "data.flip=false"])
    assert cfg.data.ids_per_batch == 4
    assert cfg.data.image_size == [64, 32]
    assert cfg.data.flip is False


def test_int_is_accepted_for_float_but_not_the_reverse() -> None:
    with pytest.raises(ConfigError, match=r"data.ids_per_batch: expected int, got 4.5"):
        load_config("tiny", ["data.ids_per_batch=4.5"])


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["data.batchsize=3"])
    message = str(err.value)
    assert "data.batchsize" in message and "ids_per_batch" in message and "image_size" in message


def test_literal_error_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"data.dataset='cuhk'.*synth, sysu, regdb, llcm"):
        load_config("tiny", ["data.dataset=cuhk"])


def test_bounds_and_lengths_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"data.trial=11 is too large; it must be <= 10"):
        load_config("tiny", ["data.trial=11"])
    with pytest.raises(ConfigError, match=r"data.image_size: expected a list of 2 values"):
        load_config("tiny", ["data.image_size=[1, 2, 3]"])
    with pytest.raises(ConfigError, match=r"data.image_size\[1\]=4 is too small"):
        load_config("tiny", ["data.image_size=[64, 4]"])


def test_bool_is_not_an_int() -> None:
    with pytest.raises(ConfigError, match="expected int"):
        load_config("tiny", ["seed=true"])


def test_malformed_override_and_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config("tiny", ["data.trial"])
    with pytest.raises(ConfigError, match=r"valid presets: .*paper.*tiny"):
        load_config("huge")


def test_yaml_file_preset(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", "data": {"dataset": "regdb", "trial": 3}}))
    cfg = load_config(path)
    assert (cfg.name, cfg.data.dataset, cfg.data.trial) == ("mine", "regdb", 3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_save_and_read_round_trip(tmp_path) -> None:
    cfg = load_config("tiny", ["data.trial=7", "eval.shot=multi"])
    save_config(cfg, tmp_path / "run")
    again = read_saved_config(tmp_path / "run")
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config("tiny")) != config_hash(cfg)


def test_a_run_is_identified_by_what_it_depends_on_only() -> None:
    cfg = load_config("tiny")
    elsewhere = ["caption.actors=1", "serve.port=9001", "tracking.experiment=other", "dist.num_workers=2"]
    assert config_hash(load_config("tiny", [*elsewhere, "name=other", "device=cpu"])) == config_hash(cfg)
    for key in ("data.image_size=[64,32]", "backbone.gem_p=4.0", "base.lr=0.1", "eval.val_trials=1"):
        assert config_hash(load_config("tiny", [key])) != config_hash(cfg), key
    # each stage ignores the other stage's section; SynthTri settings only matter for SynthTri
    assert run_settings(load_config("tiny", ["joint.lr=0.1"]), "base") == run_settings(cfg, "base")
    assert run_settings(load_config("tiny", ["base.lr=0.1"]), "joint") == run_settings(cfg, "joint")
    sysu = load_config("tiny", ["data.dataset=sysu"])
    assert run_settings(load_config("tiny", ["data.dataset=sysu", "synth.ids=8"])) == run_settings(sysu)


def test_a_preset_extends_another_and_overrides_only_what_differs(tmp_path) -> None:
    (tmp_path / "base.yaml").write_text("extends: tiny\njoint:\n  epochs: 9\n")
    (tmp_path / "variant.yaml").write_text("extends: base.yaml\njoint:\n  text_aug_prob: 0.0\n")
    cfg = load_config(tmp_path / "variant.yaml", ["joint.lr=0.5"])
    tiny = load_config("tiny")
    assert (cfg.joint.epochs, cfg.joint.text_aug_prob, cfg.joint.lr) == (9, 0.0, 0.5)
    assert cfg.joint.streams == tiny.joint.streams and cfg.base == tiny.base  # the rest is tiny's
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "bad.yaml").write_text("extends: [tiny]\n")
    with pytest.raises(ConfigError, match="extends must name a preset"):
        load_config(tmp_path / "bad.yaml")


def test_missing_saved_config_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"no saved config here"):
        read_saved_config(tmp_path)


def test_defaults_equal_the_tiny_preset_where_it_is_silent() -> None:
    assert load_config(None) == Config()


def test_exponent_floats_work_in_overrides_and_yaml(tmp_path) -> None:
    assert load_config("tiny", ["base.lr=1e-3"]).base.lr == 1e-3
    path = tmp_path / "exp.yaml"
    path.write_text("joint:\n  lr: 1e-5\n")
    assert load_config(path).joint.lr == 1e-5
    with pytest.raises(ConfigError, match=r"base\.lr: expected float"):
        load_config("tiny", ["base.lr=fast"])
