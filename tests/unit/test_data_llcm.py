"""LLCM layout loader: train index files, test camera folders and the IR->RGB default direction."""

from __future__ import annotations

from pathlib import Path

import pytest
from layouts import LlcmPlan, build_llcm, llcm_rel, llcm_train_rel, write_file

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


def train_rels(modality: str, plan: dict[tuple[int, int], int], published: bool) -> set[str]:
    return {
        llcm_train_rel(modality, cam, pid, k, published)
        for (cam, pid), n in plan.items()
        for k in range(1, n + 1)
    }


@pytest.fixture
def plan() -> LlcmPlan:
    return make_plan()


@pytest.fixture(params=[True, False], ids=["published", "camera-folders"])
def published(request: pytest.FixtureRequest) -> bool:
    return request.param


@pytest.fixture
def root(tmp_path: Path, plan: LlcmPlan, published: bool) -> Path:
    return build_llcm(tmp_path / "LLCM", plan, decodable=False, published=published)


def test_splits_hold_exactly_the_planned_images(root: Path, plan: LlcmPlan, published: bool) -> None:
    splits = load_dataset("llcm", root)
    assert splits.name == "llcm"
    assert {s.rel for s in splits.train_visible} == train_rels("visible", plan.train["visible"], published)
    assert {s.rel for s in splits.train_ir} == train_rels("ir", plan.train["ir"], published)
    assert {s.rel for s in splits.test_query} == rels("test_nir", plan.test["ir"], plan.test_ids)
    assert {s.rel for s in splits.test_gallery} == rels("test_vis", plan.test["visible"], plan.test_ids)
    assert splits.train_ids == [1, 4, 6]
    assert splits.test_ids == [10, 11, 15]
    assert len(splits.test_query) == 4 and len(splits.test_gallery) == 4
    assert splits.val_ids == [] and splits.skipped == []


def test_camera_and_identity_come_from_the_folders_or_the_file_name(root: Path, published: bool) -> None:
    splits = load_llcm(root)
    for s in [*splits.train_visible, *splits.train_ir]:
        if published:  # vis/<id>/PPPP_cNN_...: the camera only in the file name
            folder, id_folder, name = s.rel.split("/")
            assert (folder, id_folder) == ({"visible": "vis", "ir": "nir"}[s.modality], f"{s.pid:04d}")
            assert name.startswith(f"{s.pid:04d}_c{s.cam:02d}_")
    for samples, top, modality in (
        *(
            ((splits.train_visible, "train_vis", "visible"), (splits.train_ir, "train_nir", "ir"))
            * (not published)
        ),
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
        ("vis/0001/0001_c02_s200101_f6401_1.jpg", "expected two fields"),
        ("vis/0001/0001_c02_s200101_f6401_1.jpg one", "label 'one' is not an integer"),
        ("train_vis/camX/0001/0001_c02_s200101_f6401_1.jpg 0", "camera folder 'camX'"),
        (
            "vis/0001/0001_s200101_f6401_1.jpg 0",
            r"file name '0001_s200101_f6401_1.jpg' does not carry the camera",
        ),
        (
            "nir/0001/0001_c04_s200101_f6401_1.jpg 0",
            r"expected form vis/<id>/<PPPP_cNN_...> or train_vis/cam<K>/<id>/<name>",
        ),
        (
            "vis/cam2/0001/0001_c02_s200101_f6401_1.jpg 0",
            r"expected form vis/<id>/<PPPP_cNN_...> or train_vis",
        ),
        ("vis/../../x/0001/a.jpg 0", "outside the dataset root"),
        ("vis/0001/0001_c02_s209999_f0_1.jpg 0", "listed image does not exist"),
    ],
)
def test_malformed_train_line_names_file_and_line(
    tmp_path: Path, plan: LlcmPlan, text: str, pattern: str
) -> None:
    root = build_llcm(tmp_path / "LLCM", plan, decodable=False)
    index = root / "idx" / "train_vis.txt"
    lines = index.read_text().splitlines()
    lines[2] = text
    index.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=pattern) as err:
        load_llcm(root)
    assert "train_vis.txt:3: " in str(err.value)


def test_tri_llcm_captions_join_training_and_test_images(tmp_path: Path, plan: LlcmPlan) -> None:
    """Tri-LLCM keys every image as <their prefix>/vis|nir/<id>/<file>, test images included."""
    import json

    from tvifm.data.sidecars import load_text_for

    root = build_llcm(tmp_path / "LLCM", plan, decodable=False)
    splits = load_dataset("llcm", root)
    prefix = "/data0/someone/LLCM"
    by_modality = {
        "visible": [*splits.train_visible, *splits.test_gallery],
        "ir": [*splits.train_ir, *splits.test_query],
    }
    for modality, folder in (("visible", "Blip_RGB"), ("ir", "Blip_IR")):
        top = {"visible": "vis", "ir": "nir"}[modality]
        data = {
            f"{prefix}/{top}/{s.pid:04d}/{s.rel.rsplit('/', 1)[1]}": {"description": f"caption of {s.rel}"}
            for s in by_modality[modality]
        }
        data[f"{prefix}/{top}/9999/9999_c01_s1_f1_1.jpg"] = {"description": "no such image"}
        write_file(root / "Text" / folder / "caption_dict_llcm.json", json.dumps(data).encode())
    text = load_text_for(splits)
    for samples in by_modality.values():
        for s in samples:
            assert text.caption(s).description == f"caption of {s.rel}", s.rel
    assert any(s.rel.startswith("test_nir/") for s in by_modality["ir"])
    assert len(text.unmatched_keys) == 2


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
