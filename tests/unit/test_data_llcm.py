"""LLCM layout loader: train index files, test camera folders and the IR->RGB default direction."""

from __future__ import annotations

from pathlib import Path

import pytest
from layouts import LlcmPlan, build_llcm, llcm_rel, write_file

from tvifm.data.llcm import load_llcm
from tvifm.data.registry import load_dataset
from tvifm.errors import DatasetError


def make_plan() -> LlcmPlan:
    """Identities missing from some cameras; test id 15 has no IR image; id 20 is in no split."""
    return LlcmPlan(
        train={
            "visible": {(2, 1): 2, (3, 1): 1, (2, 4): 1, (5, 6): 2},
            "ir": {(4, 1): 1, (6, 4): 2, (4, 6): 1},
        },
        test_ids=[10, 11, 15],
        test={
            "visible": {(1, 10): 2, (2, 11): 1, (9, 15): 1, (1, 20): 1},
            "ir": {(4, 10): 1, (4, 11): 2, (7, 10): 1, (4, 20): 1},
        },
    )


def rels(top: str, plan: dict[tuple[int, int], int], ids: list[int]) -> set[str]:
    return {
        llcm_rel(top, cam, pid, k) for (cam, pid), n in plan.items() if pid in ids for k in range(1, n + 1)
    }


@pytest.fixture
def plan() -> LlcmPlan:
    return make_plan()


@pytest.fixture
def root(tmp_path: Path, plan: LlcmPlan) -> Path:
    return build_llcm(tmp_path / "LLCM", plan, decodable=False)


def test_splits_hold_exactly_the_planned_images(root: Path, plan: LlcmPlan) -> None:
    splits = load_dataset("llcm", root)
    train_ids = plan.train_ids()
    assert splits.name == "llcm"
    assert {s.rel for s in splits.train_visible} == rels("train_vis", plan.train["visible"], train_ids)
    assert {s.rel for s in splits.train_ir} == rels("train_nir", plan.train["ir"], train_ids)
    assert {s.rel for s in splits.test_query} == rels("test_nir", plan.test["ir"], plan.test_ids)
    assert {s.rel for s in splits.test_gallery} == rels("test_vis", plan.test["visible"], plan.test_ids)
    assert splits.train_ids == [1, 4, 6]
    assert splits.test_ids == [10, 11, 15]
    assert len(splits.test_query) == 4 and len(splits.test_gallery) == 4
    assert splits.val_ids == [] and splits.skipped == []


def test_camera_and_identity_come_from_the_folders(root: Path) -> None:
    splits = load_llcm(root)
    for samples, top, modality in (
        (splits.train_visible, "train_vis", "visible"),
        (splits.train_ir, "train_nir", "ir"),
        (splits.test_query, "test_nir", "ir"),
        (splits.test_gallery, "test_vis", "visible"),
    ):
        for s in samples:
            folder, cam_folder, id_folder, name = s.rel.split("/")
            assert (folder, cam_folder, id_folder) == (top, f"cam{s.cam}", f"{s.pid:04d}")
            assert name.startswith(f"{s.pid:04d}_c{s.cam:02d}_")
            assert s.modality == modality
            assert Path(s.path) == root / s.rel


def test_missing_root_names_folder_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("llcm", tmp_path / "LLCM")
    assert str(tmp_path / "LLCM") in str(err.value)
    assert "idx/train_vis.txt" in str(err.value)


@pytest.mark.parametrize("rel", ["idx/train_nir.txt", "idx/test_id.txt"])
def test_missing_index_file(root: Path, rel: str) -> None:
    (root / rel).unlink()
    with pytest.raises(DatasetError, match=rf"{rel}: file is missing; expected LLCM layout"):
        load_llcm(root)


def test_missing_test_folder(root: Path) -> None:
    (root / "test_nir").rename(root / "nir_test")
    with pytest.raises(DatasetError, match=r"test_nir: dataset folder does not exist"):
        load_llcm(root)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("train_vis/cam2/0001/0001_c02_s200101_f6401_1.jpg", "expected two fields"),
        ("train_vis/cam2/0001/0001_c02_s200101_f6401_1.jpg one", "label 'one' is not an integer"),
        ("train_vis/camX/0001/0001_c02_s200101_f6401_1.jpg 0", "camera folder 'camX'"),
        ("train_nir/cam4/0001/0001_c04_s200101_f6401_1.jpg 0", r"expected form train_vis/cam<K>/<id>/<name>"),
        ("train_vis/../../x/0001/a.jpg 0", "outside the dataset root"),
        ("train_vis/cam2/0001/0001_c02_s209999_f0_1.jpg 0", "listed image does not exist"),
    ],
)
def test_malformed_train_line_names_file_and_line(root: Path, text: str, pattern: str) -> None:
    index = root / "idx" / "train_vis.txt"
    lines = index.read_text().splitlines()
    lines[2] = text
    index.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=pattern) as err:
        load_llcm(root)
    assert "train_vis.txt:3: " in str(err.value)


def test_test_id_without_images(root: Path) -> None:
    (root / "idx" / "test_id.txt").write_text("10,11,15,16\n")
    with pytest.raises(DatasetError, match=r"test_id\.txt: test identity ids \[16\] have no image"):
        load_llcm(root)


def test_test_id_that_is_also_a_training_id(root: Path) -> None:
    (root / "idx" / "test_id.txt").write_text("10,11,15,4\n")
    with pytest.raises(
        DatasetError, match=r"test_id\.txt: test identity ids \[4\] also appear in the training"
    ):
        load_llcm(root)


def test_malformed_test_id_file(root: Path) -> None:
    (root / "idx" / "test_id.txt").write_text("10;11\n")
    with pytest.raises(DatasetError, match=r"test_id\.txt:1: item 1 is '10;11'"):
        load_llcm(root)


def test_stray_entry_in_test_folder(root: Path) -> None:
    write_file(root / "test_vis" / "readme.txt")
    with pytest.raises(DatasetError, match=r"test_vis/readme\.txt: unexpected entry; expected only camera"):
        load_llcm(root)
