"""SYSU-MM01 layout loader (and SynthTri, which shares it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from layouts import SysuPlan, build_sysu, sysu_rel, write_file

from tvifm.data.registry import load_dataset
from tvifm.data.sysu import load_sysu, read_id_list
from tvifm.errors import DatasetError

VIS = (1, 2, 4, 5)
IR = (3, 6)


def make_plan() -> SysuPlan:
    """Ids missing from some cameras, and id 30 that is in no split file."""
    images = {
        (1, 1): 2, (2, 1): 1, (3, 1): 2, (6, 1): 1,
        (4, 2): 1, (5, 2): 2, (3, 2): 1,
        (1, 4): 1, (6, 4): 3,
        (2, 5): 1, (3, 5): 1,
        (5, 7): 2, (6, 7): 1,
        (1, 12): 2, (3, 12): 3, (6, 12): 1,
        (4, 13): 1, (2, 13): 1, (3, 13): 2,
        (1, 30): 1, (3, 30): 1,
    }  # fmt: skip
    return SysuPlan(train=[1, 2, 4], val=[5, 7], test=[12, 13], images=images)


def expected_rels(plan: SysuPlan, ids: list[int], cams: tuple[int, ...]) -> set[str]:
    return {
        sysu_rel(cam, pid, k)
        for (cam, pid), n in plan.images.items()
        if pid in ids and cam in cams
        for k in range(1, n + 1)
    }


@pytest.fixture
def plan() -> SysuPlan:
    return make_plan()


@pytest.fixture
def root(tmp_path: Path, plan: SysuPlan) -> Path:
    return build_sysu(tmp_path / "SYSU-MM01", plan, decodable=False)


def test_splits_hold_exactly_the_planned_images(root: Path, plan: SysuPlan) -> None:
    splits = load_sysu(root)
    assert splits.name == "sysu"
    assert {s.rel for s in splits.train_visible} == expected_rels(plan, plan.train, VIS)
    assert {s.rel for s in splits.train_ir} == expected_rels(plan, plan.train, IR)
    assert {s.rel for s in splits.val_visible} == expected_rels(plan, plan.val, VIS)
    assert {s.rel for s in splits.val_ir} == expected_rels(plan, plan.val, IR)
    assert {s.rel for s in splits.test_query} == expected_rels(plan, plan.test, IR)
    assert {s.rel for s in splits.test_gallery} == expected_rels(plan, plan.test, VIS)
    assert len(splits.train_visible) == plan.count(plan.train, VIS) == 7
    assert len(splits.test_query) == plan.count(plan.test, IR) == 6
    assert splits.val_ids == [5, 7]
    assert splits.train_ids == [1, 2, 4]
    assert splits.test_ids == [12, 13]
    assert splits.skipped == []


def test_every_sample_has_the_identity_camera_and_modality_of_its_path(root: Path) -> None:
    splits = load_sysu(root)
    samples = [*splits.train_visible, *splits.train_ir, *splits.val_visible, *splits.val_ir]
    samples += [*splits.test_query, *splits.test_gallery]
    for s in samples:
        cam_folder, id_folder, _ = s.rel.split("/")
        assert cam_folder == f"cam{s.cam}"
        assert int(id_folder) == s.pid
        assert s.modality == ("visible" if s.cam in VIS else "ir")
        assert Path(s.path) == root / s.rel
    assert all(s.pid != 30 for s in samples)


def test_synth_name_uses_the_sysu_loader(root: Path, plan: SysuPlan) -> None:
    splits = load_dataset("synth", root)
    assert splits.name == "synth"
    assert len(splits.test_gallery) == plan.count(plan.test, VIS)


def test_empty_image_is_skipped_and_reported_and_other_files_ignored(root: Path, plan: SysuPlan) -> None:
    write_file(root / "cam1" / "0001" / "0009.jpg", b"")
    write_file(root / "cam1" / "0001" / "Thumbs.db", b"x")
    splits = load_sysu(root)
    assert len(splits.train_visible) == plan.count(plan.train, VIS)
    assert len(splits.skipped) == 1
    path, reason = splits.skipped[0]
    assert path.endswith("cam1/0001/0009.jpg")
    assert "empty" in reason


def test_missing_root_names_folder_and_layout(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        load_dataset("sysu", missing)
    assert str(missing) in str(err.value)
    assert "camN/PPPP/NNNN.jpg" in str(err.value)


def test_missing_split_file(root: Path) -> None:
    (root / "exp" / "val_id.txt").unlink()
    with pytest.raises(DatasetError, match=r"val_id\.txt.*missing"):
        load_sysu(root)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("1,2,x\n", r"train_id\.txt:1: item 3 is 'x'"),
        ("1,,2\n", r"train_id\.txt:1: item 2 is ''"),
        ("", r"train_id\.txt: file is empty"),
        ("1,2\n4\n", r"train_id\.txt:2: more than one non-empty line"),
        ("1,2,2\n", r"train_id\.txt:1: .*listed more than once: \[2\]"),
        ("1 2 4\n", r"train_id\.txt:1: item 1 is '1 2 4'"),
    ],
)
def test_malformed_split_file(root: Path, content: str, pattern: str) -> None:
    (root / "exp" / "train_id.txt").write_text(content)
    with pytest.raises(DatasetError, match=pattern):
        load_sysu(root)


def test_split_file_tolerates_spaces_and_trailing_comma(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text(" 3, 1 ,20,\r\n\n")
    assert read_id_list(path) == [3, 1, 20]


def test_listed_id_without_images_is_an_error(root: Path, plan: SysuPlan) -> None:
    (root / "exp" / "test_id.txt").write_text("12,13,99\n")
    with pytest.raises(DatasetError) as err:
        load_sysu(root)
    assert "test_id.txt" in str(err.value)
    assert "[99]" in str(err.value)


def test_id_in_two_split_files_is_an_error(root: Path) -> None:
    (root / "exp" / "val_id.txt").write_text("5,7,2\n")
    with pytest.raises(DatasetError) as err:
        load_sysu(root)
    message = str(err.value)
    assert "train_id.txt" in message and "val_id.txt" in message and "[2]" in message


def test_unexpected_folder_in_a_camera_folder(root: Path) -> None:
    (root / "cam2" / "notes").mkdir()
    with pytest.raises(DatasetError, match=r"cam2/notes: .*identity folders"):
        load_sysu(root)


def test_root_without_camera_folders(tmp_path: Path) -> None:
    build_sysu(tmp_path, SysuPlan(train=[1], val=[2], test=[3]))
    for cam in range(1, 7):
        (tmp_path / f"cam{cam}").rmdir()
    with pytest.raises(DatasetError, match="no camera folders"):
        load_sysu(tmp_path)
