"""Builders of miniature dataset trees in the real on-disk layouts (SYSU-MM01, RegDB, LLCM).

Each builder takes a plan (which identity has how many images in which camera) and writes the tree with
the real file-name patterns, so tests derive every expected count from the plan, not from the loaders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

PLACEHOLDER = b"not decoded while listing"
REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """The shared folder: ``$TVIFM_SHARED`` or ``../shared`` next to the repository."""
    env = os.environ.get("TVIFM_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def write_image(
    path: Path, color: tuple[int, int, int] = (180, 40, 40), size: tuple[int, int] = (8, 16)
) -> Path:
    """Write a tiny valid image; the format follows the suffix (``.jpg`` or ``.bmp``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_file(path: Path, data: bytes = PLACEHOLDER) -> Path:
    """Write raw bytes (a placeholder that loaders list but never decode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write(path: Path, decodable: bool) -> None:
    if decodable:
        write_image(path)
    else:
        write_file(path)


# --- SYSU-MM01 -------------------------------------------------------------------------------------------


@dataclass
class SysuPlan:
    """Split ids and ``images[(cam, pid)]`` = number of images of ``pid`` in camera ``cam``."""

    train: list[int]
    val: list[int]
    test: list[int]
    images: dict[tuple[int, int], int] = field(default_factory=dict)

    def count(self, ids: list[int], cams: tuple[int, ...]) -> int:
        """Number of planned images of ``ids`` in ``cams``."""
        return sum(n for (cam, pid), n in self.images.items() if pid in ids and cam in cams)


def sysu_rel(cam: int, pid: int, k: int) -> str:
    """Relative path of the ``k``-th (1-based) image of ``pid`` in camera ``cam``: ``cam3/0012/0004.jpg``."""
    return f"cam{cam}/{pid:04d}/{k:04d}.jpg"


def write_id_file(path: Path, ids: list[int]) -> None:
    """One comma-separated line of ids, as in SYSU ``exp/*_id.txt`` and LLCM ``idx/test_id.txt``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(str(i) for i in ids) + "\n")


def build_sysu(root: Path, plan: SysuPlan, decodable: bool = True) -> Path:
    """Write ``plan`` in the SYSU-MM01 layout under ``root`` (all six camera folders exist)."""
    for cam in range(1, 7):
        (root / f"cam{cam}").mkdir(parents=True, exist_ok=True)
    for (cam, pid), n in plan.images.items():
        for k in range(1, n + 1):
            _write(root / sysu_rel(cam, pid, k), decodable)
    for split in ("train", "val", "test"):
        write_id_file(root / "exp" / f"{split}_id.txt", getattr(plan, split))
    return root


# --- RegDB -----------------------------------------------------------------------------------------------

RegdbFiles = dict[str, dict[int, list[str]]]  # "Visible"/"Thermal" -> pid -> file names


def regdb_files(ids: list[int], per_modality: int = 10) -> RegdbFiles:
    """Real-style names such as ``Visible/12/female_back_v_01200_12.bmp`` and ``Thermal/12/..._t_...``."""
    files: RegdbFiles = {"Visible": {}, "Thermal": {}}
    for pid in ids:
        gender = "male" if pid % 2 else "female"
        for folder, letter in (("Visible", "v"), ("Thermal", "t")):
            names = []
            for k in range(per_modality):
                view = "front" if k < per_modality // 2 else "back"
                names.append(f"{gender}_{view}_{letter}_{pid * 100 + k:05d}_{pid}.bmp")
            files[folder][pid] = names
    return files


def regdb_index_lines(files: RegdbFiles, folder: str, ids: list[int]) -> list[str]:
    """Index lines ``<folder>/<id>/<name> <label>`` with labels relabelled 0.. in sorted id order."""
    label = {pid: i for i, pid in enumerate(sorted(ids))}
    return [f"{folder}/{pid}/{name} {label[pid]}" for pid in sorted(ids) for name in files[folder][pid]]


def build_regdb(root: Path, files: RegdbFiles, trials: dict[int, list[int]], decodable: bool = True) -> Path:
    """Write the images of ``files`` and, for each trial, idx files with ``trials[t]`` as train ids."""
    for folder, by_id in files.items():
        for pid, names in by_id.items():
            for name in names:
                _write(root / folder / str(pid) / name, decodable)
    all_ids = sorted(files["Visible"])
    for trial, train_ids in trials.items():
        test_ids = [pid for pid in all_ids if pid not in train_ids]
        for split, ids in (("train", train_ids), ("test", test_ids)):
            for folder, word in (("Visible", "visible"), ("Thermal", "thermal")):
                lines = regdb_index_lines(files, folder, ids)
                write_lines(root / "idx" / f"{split}_{word}_{trial}.txt", lines)
    return root


def write_lines(path: Path, lines: list[str]) -> None:
    """Write text lines, newline-terminated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


# --- LLCM ------------------------------------------------------------------------------------------------

LLCM_DIRS = {"visible": ("train_vis", "test_vis"), "ir": ("train_nir", "test_nir")}
LLCM_PUBLISHED_TRAIN = {"visible": "vis", "ir": "nir"}


@dataclass
class LlcmPlan:
    """``train[modality][(cam, pid)]`` and ``test[modality][(cam, pid)]`` = number of images."""

    train: dict[str, dict[tuple[int, int], int]]
    test_ids: list[int]
    test: dict[str, dict[tuple[int, int], int]]

    def train_ids(self) -> list[int]:
        """Sorted identity ids of the training plan."""
        return sorted({pid for by_cam in self.train.values() for _, pid in by_cam})


def llcm_name(cam: int, pid: int, k: int) -> str:
    """``0012_c04_s200109_f6409_1.jpg``: an LLCM file name, camera included."""
    return f"{pid:04d}_c{cam:02d}_s2001{k:02d}_f{6400 + k}_1.jpg"


def llcm_rel(top: str, cam: int, pid: int, k: int) -> str:
    """``test_nir/cam4/0012/0012_c04_s200109_f6420_1.jpg``-style relative path of image ``k``."""
    return f"{top}/cam{cam}/{pid:04d}/{llcm_name(cam, pid, k)}"


def llcm_train_rel(modality: str, cam: int, pid: int, k: int, published: bool = True) -> str:
    """A training image's path: ``nir/0012/0012_c04_...jpg`` as published, or in a camera folder."""
    if published:
        return f"{LLCM_PUBLISHED_TRAIN[modality]}/{pid:04d}/{llcm_name(cam, pid, k)}"
    return llcm_rel(LLCM_DIRS[modality][0], cam, pid, k)


def build_llcm(root: Path, plan: LlcmPlan, decodable: bool = True, published: bool = True) -> Path:
    """Write ``plan`` in the LLCM layout under ``root``: training images under ``vis|nir/<id>/`` as the
    dataset is published, or (``published=False``) under ``train_vis|train_nir/camK/<id>/``."""
    label = {pid: i for i, pid in enumerate(plan.train_ids())}
    for modality, (train_top, test_top) in LLCM_DIRS.items():
        lines = []
        for (cam, pid), n in sorted(plan.train[modality].items(), key=lambda item: item[0][::-1]):
            for k in range(1, n + 1):
                rel = llcm_train_rel(modality, cam, pid, k, published)
                _write(root / rel, decodable)
                lines.append(f"{rel} {label[pid]}")
        write_lines(root / "idx" / f"{train_top}.txt", lines)
        (root / test_top).mkdir(parents=True, exist_ok=True)
        for (cam, pid), n in plan.test[modality].items():
            for k in range(1, n + 1):
                _write(root / llcm_rel(test_top, cam, pid, k), decodable)
    write_id_file(root / "idx" / "test_id.txt", plan.test_ids)
    return root
