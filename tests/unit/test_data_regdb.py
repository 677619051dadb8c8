"""RegDB layout loader: idx files, identities from folders, trials, and bad index lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from layouts import build_regdb, regdb_files, write_file

from tvifm.data.regdb import load_regdb
from tvifm.data.registry import load_dataset
from tvifm.errors import ConfigError, DatasetError, TvifmError

IDS = [1, 2, 3, 4, 5, 6, 7, 8]
PER_MODALITY = 3
TRIALS = {1: [1, 3, 5, 7], 2: [2, 4, 6, 8]}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_regdb(tmp_path / "RegDB", regdb_files(IDS, PER_MODALITY), TRIALS)


def replace_line(path: Path, line_no: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("trial", [1, 2])
def test_trial_splits_ids_and_directions(root: Path, trial: int) -> None:
    splits = load_dataset("regdb", root, trial=trial)
    train = TRIALS[trial]
    test = [pid for pid in IDS if pid not in train]
    assert splits.name == "regdb"
    assert splits.train_ids == train
    assert splits.test_ids == test
    assert len(splits.train_visible) == len(splits.train_ir) == len(train) * PER_MODALITY
    assert len(splits.test_query) == len(splits.test_gallery) == len(test) * PER_MODALITY
    assert {s.modality for s in splits.test_query} == {"ir"}
    assert {s.modality for s in splits.test_gallery} == {"visible"}
    assert splits.val_ids == [] and splits.skipped == []


def test_samples_carry_folder_identity_and_camera(root: Path) -> None:
    files = regdb_files(IDS, PER_MODALITY)
    splits = load_regdb(root, trial=1)
    for samples, folder, cam in (
        (splits.train_visible, "Visible", 1),
        (splits.test_gallery, "Visible", 1),
        (splits.train_ir, "Thermal", 2),
        (splits.test_query, "Thermal", 2),
    ):
        for s in samples:
            top, pid, name = s.rel.split("/")
            assert (top, int(pid), s.cam) == (folder, s.pid, cam)
            assert name in files[folder][s.pid]
            assert Path(s.path) == root / s.rel
    assert {s.rel for s in splits.test_query} == {
        f"Thermal/{pid}/{name}" for pid in (2, 4, 6, 8) for name in files["Thermal"][pid]
    }


@pytest.mark.parametrize("trial", [0, 11, "1", True, 1.0])
def test_trial_out_of_range(root: Path, trial: object) -> None:
    with pytest.raises(ConfigError, match="trial must be an integer from 1 to 10"):
        load_regdb(root, trial=trial)  # type: ignore[arg-type]


def test_missing_root_names_folder_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("regdb", tmp_path / "RegDB")
    assert str(tmp_path / "RegDB") in str(err.value)
    assert "Visible/<id>/*.bmp" in str(err.value)


def test_missing_index_file(root: Path) -> None:
    (root / "idx" / "test_thermal_1.txt").unlink()
    with pytest.raises(DatasetError, match=r"idx/test_thermal_1\.txt: index file is missing; expected RegDB"):
        load_regdb(root, trial=1)
    with pytest.raises(DatasetError, match=r"idx/train_visible_3\.txt: index file is missing"):
        load_regdb(root, trial=3)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("Visible/1/female_front_v_00100_1.bmp", "expected two fields"),
        ("Visible/1/female_front_v_00100_1.bmp 0 extra", "expected two fields"),
        ("Visible/1/female_front_v_00100_1.bmp zero", "label 'zero' is not an integer"),
        ("../Visible/1/female_front_v_00100_1.bmp 0", "outside the dataset root"),
        ("Visible/../../elsewhere/x.bmp 0", "outside the dataset root"),
        ("/data/RegDB/Visible/1/female_front_v_00100_1.bmp 0", "outside the dataset root"),
        ("Thermal/1/female_front_t_00100_1.bmp 0", "expected form Visible/<id>/<name>"),
        ("Visible/female_front_v_00100_1.bmp 0", "expected form Visible/<id>/<name>"),
        ("Visible/one/female_front_v_00100_1.bmp 0", "identity folder 'one'"),
        ("Visible/1/female_front_v_99999_1.bmp 0", "listed image does not exist"),
    ],
)
def test_malformed_index_line_names_file_and_line(root: Path, text: str, pattern: str) -> None:
    replace_line(root / "idx" / "train_visible_1.txt", 2, text)
    with pytest.raises(DatasetError, match=pattern) as err:
        load_regdb(root, trial=1)
    assert "train_visible_1.txt:2: " in str(err.value)


def test_one_folder_with_two_labels(root: Path) -> None:
    index = root / "idx" / "test_thermal_1.txt"
    line = index.read_text().splitlines()[1]
    replace_line(index, 2, line.rsplit(" ", 1)[0] + " 3")
    with pytest.raises(DatasetError, match=r"test_thermal_1\.txt:2: identity 2 has label 3 here but label 0"):
        load_regdb(root, trial=1)


def test_two_folders_with_one_label(root: Path) -> None:
    index = root / "idx" / "train_thermal_1.txt"
    lines = index.read_text().splitlines()
    first_of_7 = next(no for no, line in enumerate(lines, 1) if line.startswith("Thermal/7/"))
    relabelled = [line.rsplit(" ", 1)[0] + " 0" if line.startswith("Thermal/7/") else line for line in lines]
    index.write_text("\n".join(relabelled) + "\n")
    pattern = rf"train_thermal_1\.txt:{first_of_7}: label 0 is given to identity 7 here but to identity 1"
    with pytest.raises(DatasetError, match=pattern):
        load_regdb(root, trial=1)


def test_line_listed_twice(root: Path) -> None:
    index = root / "idx" / "train_visible_1.txt"
    first = index.read_text().splitlines()[0]
    replace_line(index, 3, first)
    with pytest.raises(DatasetError, match=r"train_visible_1\.txt:3: .*listed twice \(first on line 1\)"):
        load_regdb(root, trial=1)


def test_train_and_test_sharing_an_identity(root: Path) -> None:
    index = root / "idx" / "test_visible_1.txt"
    train_image = regdb_files(IDS, PER_MODALITY)["Visible"][1][0]
    index.write_text(index.read_text() + f"Visible/1/{train_image} 9\n")
    with pytest.raises(DatasetError, match=r"identities \[1\] appear in both the train and the test"):
        load_regdb(root, trial=1)


def test_blank_lines_and_crlf_are_accepted(root: Path) -> None:
    index = root / "idx" / "train_visible_1.txt"
    index.write_bytes(index.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n")
    assert len(load_regdb(root, trial=1).train_visible) == 4 * PER_MODALITY


def test_empty_listed_image_is_skipped_and_reported(root: Path) -> None:
    victim = root / "Thermal" / "2" / regdb_files(IDS, PER_MODALITY)["Thermal"][2][0]
    write_file(victim, b"")
    splits = load_regdb(root, trial=1)
    assert len(splits.test_query) == 4 * PER_MODALITY - 1
    assert splits.skipped == [(str(victim), "empty file (0 bytes)")]


def test_errors_are_tvifm_errors_not_tracebacks(root: Path) -> None:
    (root / "idx" / "train_visible_1.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TvifmError, match=r"train_visible_1\.txt"):
        load_regdb(root, trial=1)
