"""Dataset statistics and the dataset registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from layouts import LlcmPlan, SysuPlan, build_llcm, build_regdb, build_sysu, regdb_files, sysu_rel, write_file

from tvifm.data.registry import DATASETS, load_dataset
from tvifm.data.sidecars import Caption, caption_dict_path, load_text_for, write_caption_dict
from tvifm.data.stats import dataset_stats, stats_for
from tvifm.errors import ConfigError, DatasetError

VIS = (1, 2, 4, 5)
IR = (3, 6)
PLAN = SysuPlan(
    train=[1, 2],
    val=[4],
    test=[7, 8, 9],
    images={(1, 1): 3, (3, 1): 2, (5, 2): 1, (6, 2): 2, (2, 4): 1, (3, 4): 1,
            (1, 7): 2, (3, 7): 1, (4, 8): 1, (6, 8): 4, (2, 9): 1, (3, 9): 1, (1, 50): 2},
)  # fmt: skip


@pytest.fixture
def sysu_root(tmp_path: Path) -> Path:
    root = build_sysu(tmp_path / "synth", PLAN, decodable=False)
    write_caption_dict(
        caption_dict_path(root, "visible"),
        {sysu_rel(1, 1, 1): Caption("a", "b"), "x/cam1/0007/0002.jpg": Caption("c")},
    )
    write_caption_dict(
        caption_dict_path(root, "ir"),
        {sysu_rel(6, 8, 4): Caption("d", "e"), "cam3/0050/0001.jpg": Caption("f")},
    )
    write_file(root / "cam4" / "0008" / "0002.jpg", b"")
    return root


def test_stats_count_images_ids_captions_and_skips(sysu_root: Path) -> None:
    splits = load_dataset("synth", sysu_root)
    stats = dataset_stats(splits, load_text_for(splits))
    assert stats["dataset"] == "synth"
    assert stats["train"]["visible"] == PLAN.count(PLAN.train, VIS) == 4
    assert stats["train"]["ir"] == PLAN.count(PLAN.train, IR) == 4
    assert stats["train"]["ids"] == 2
    assert stats["val"]["ids"] == 1 and stats["val"]["images"] == PLAN.count(PLAN.val, VIS + IR) == 2
    assert stats["test"]["query"] == PLAN.count(PLAN.test, IR) == 6
    assert stats["test"]["gallery"] == PLAN.count(PLAN.test, VIS) == 4
    assert stats["test"]["ids"] == 3
    assert stats["test"]["query_ids"] == 3 and stats["test"]["gallery_ids"] == 3
    assert (stats["test"]["query_modality"], stats["test"]["gallery_modality"]) == ("ir", "visible")
    captions = stats["captions"]
    assert (captions["images"], captions["visible"], captions["ir"]) == (3, 2, 1)
    assert captions["with_aug"] == 2
    assert captions["unmatched_keys"] == 1  # cam3/0050 belongs to an identity in no split
    assert stats["skipped"]["count"] == 1
    assert stats["skipped"]["examples"][0]["path"].endswith("cam4/0008/0002.jpg")
    assert json.loads(json.dumps(stats)) == stats


def test_stats_without_text(sysu_root: Path) -> None:
    stats = dataset_stats(load_dataset("sysu", sysu_root))
    assert stats["captions"]["images"] == 0
    assert stats["captions"]["of_images"] == PLAN.count(
        [1, 2, 4, 7, 8, 9], VIS + IR
    )  # the empty extra is skipped


@pytest.mark.parametrize("trial", [1, 2])
def test_stats_for_regdb_trial(tmp_path: Path, trial: int) -> None:
    ids = list(range(1, 7))
    root = build_regdb(tmp_path / "RegDB", regdb_files(ids, 2), {1: [1, 2], 2: [3, 4, 5]}, decodable=False)
    stats = stats_for("regdb", root, trial=trial)
    n_train = 2 if trial == 1 else 3
    assert stats["trial"] == trial
    assert stats["train"]["ids"] == n_train
    assert stats["train"]["visible"] == stats["train"]["ir"] == 2 * n_train
    assert stats["test"]["ids"] == 6 - n_train
    assert stats["test"]["query"] == stats["test"]["gallery"] == 2 * (6 - n_train)
    assert stats["val"]["ids"] == 0
    assert stats["captions"]["images"] == 0


def test_stats_for_llcm(tmp_path: Path) -> None:
    plan = LlcmPlan(
        train={"visible": {(1, 1): 2}, "ir": {(4, 1): 1, (4, 2): 1}},
        test_ids=[5],
        test={"visible": {(1, 5): 1, (2, 5): 2}, "ir": {(4, 5): 1}},
    )
    stats = stats_for("llcm", build_llcm(tmp_path / "LLCM", plan, decodable=False))
    assert (stats["train"]["visible"], stats["train"]["ir"], stats["train"]["ids"]) == (2, 2, 2)
    assert (stats["test"]["query"], stats["test"]["gallery"], stats["test"]["ids"]) == (1, 3, 1)


def test_registry_names() -> None:
    assert set(DATASETS) == {"sysu", "regdb", "llcm", "synth"}


@pytest.mark.parametrize("name", ["market1501", "SYSU", ""])
def test_unknown_dataset_lists_valid_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset .*valid names: synth, sysu, regdb, llcm"):
        load_dataset(name, tmp_path)


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm", "synth"])
def test_root_that_is_a_file(tmp_path: Path, name: str) -> None:
    root = write_file(tmp_path / "dataset.zip")
    with pytest.raises(DatasetError, match=rf"{root}: dataset folder is not a directory; expected .*layout"):
        stats_for(name, root)
