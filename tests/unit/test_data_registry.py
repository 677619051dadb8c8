"""The dataset registry: one spec per dataset owns its layout, modality mapping, splits and protocols;
the config and the command line take their dataset names from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from layouts import LlcmPlan, SysuPlan, build_llcm, build_regdb, build_sysu, regdb_files, write_file

from tvifm.cli import main as cli
from tvifm.config import load_config
from tvifm.data.base import DatasetSplits, EvalSet, Sample
from tvifm.data.registry import DATASETS, ProtocolInputs, dataset_names, get_spec, load_dataset
from tvifm.data.sidecars import all_samples
from tvifm.errors import ConfigError
from tvifm.eval import llcm_eval_sets, regdb_eval_sets, sysu_eval_sets

SYSU_PLAN = SysuPlan(
    train=[1, 2],
    val=[3],
    test=[4, 5],
    images={(cam, pid): 1 + (cam + pid) % 3 for cam in range(1, 7) for pid in range(1, 6)},
)
LLCM_PLAN = LlcmPlan(
    train={"visible": {(1, 1): 2, (2, 2): 1}, "ir": {(3, 1): 1, (4, 2): 2}},
    test_ids=[5, 6],
    test={"visible": {(1, 5): 2, (2, 6): 1, (3, 5): 1}, "ir": {(4, 5): 1, (5, 6): 2}},
)
REGDB_TRIAL = 2


def build_root(name: str, tmp_path: Path) -> Path:
    """A miniature root of dataset ``name`` in its real layout (images are placeholders, never decoded)."""
    if name in ("sysu", "synth"):
        root = build_sysu(tmp_path / name, SYSU_PLAN, decodable=False)
    elif name == "regdb":
        root = build_regdb(tmp_path / name, regdb_files([1, 2, 3, 4], 2), {REGDB_TRIAL: [1, 3]}, False)
    else:
        root = build_llcm(tmp_path / name, LLCM_PLAN, decodable=False)
    write_file(root / "Text" / "Blip_IR" / "caption_llm_dict_Blip_IR.json", b"{}")  # a sidecar, no image
    return root


def load(name: str, tmp_path: Path) -> DatasetSplits:
    return load_dataset(name, build_root(name, tmp_path), trial=REGDB_TRIAL)


# --- one registry, unknown names list the valid ones ------------------------------------------------


def test_every_spec_is_registered_under_its_own_name() -> None:
    assert dataset_names() == tuple(DATASETS) and set(DATASETS) == {"synth", "sysu", "regdb", "llcm"}
    for name in DATASETS:
        assert get_spec(name).name == name and get_spec(name).layout


@pytest.mark.parametrize("name", ["market1501", "SYSU", "", None])
def test_unknown_name_lists_every_valid_one(name: str | None) -> None:
    with pytest.raises(ConfigError, match="unknown dataset") as err:
        get_spec(name)  # type: ignore[arg-type]
    assert all(valid in str(err.value) for valid in DATASETS)


def test_config_rejects_a_dataset_the_registry_does_not_know() -> None:
    with pytest.raises(ConfigError, match=r"data.dataset='market1501'") as err:
        load_config("tiny", ["data.dataset=market1501"])
    assert all(valid in str(err.value) for valid in DATASETS)
    for name in DATASETS:
        assert load_config("tiny", [f"data.dataset={name}"]).data.dataset == name


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "stats", "--dataset", "market1501", "--root", "x"],
        ["evaluate", "--checkpoint", "runs/x", "--dataset", "market1501"],
    ],
)
def test_cli_rejects_an_unknown_dataset_listing_the_registry(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "market1501" in err
    assert all(valid in err for valid in DATASETS)


# --- modality mapping: what the captioning job asks ---------------------------------------------------


@pytest.mark.parametrize("name", list(DATASETS))
def test_modality_of_agrees_with_the_loader_on_every_file_of_a_root(name: str, tmp_path: Path) -> None:
    """Every file of a real-style root: its modality is the loader's for images of the splits, and
    ``None`` for split/index files and sidecars."""
    root = build_root(name, tmp_path)
    splits = load_dataset(name, root, trial=REGDB_TRIAL)
    spec = get_spec(name)
    files = [Path(d, f).relative_to(root).as_posix() for d, _, names in os.walk(root) for f in names]
    mapped = {rel: spec.modality_of(rel) for rel in files if spec.modality_of(rel) is not None}
    assert mapped == {s.rel: s.modality for s in all_samples(splits)}
    assert {"visible", "ir"} == set(mapped.values())


@pytest.mark.parametrize(
    ("name", "rel", "modality"),
    [
        ("synth", "cam1/0001/0001.jpg", "visible"),
        ("sysu", "cam6/0001/0001.jpg", "ir"),
        ("sysu", "cam3/0533/0010.jpg", "ir"),
        ("sysu", "cam7/0001/0001.jpg", None),
        ("sysu", "exp/cam1.jpg", None),
        ("sysu", "cam1.jpg", None),
        ("regdb", "Thermal/3/female_back_t_02405_3.bmp", "ir"),
        ("regdb", "Visible/3/female_back_v_02396_3.bmp", "visible"),
        ("regdb", "idx/train_visible_1.txt", None),
        ("llcm", "test_nir/cam1/0001/0001_c01_s200101_f6401_1.jpg", "ir"),
        ("llcm", "train_vis/cam2/0001/0001_c02_s200109_f6420_1.jpg", "visible"),
        ("llcm", "vis/0001/x.jpg", "visible"),
        ("llcm", "idx/train_nir.txt", None),
    ],
)
def test_modality_of_real_style_paths(name: str, rel: str, modality: str | None) -> None:
    assert get_spec(name).modality_of(rel) == modality


# --- evaluation protocols: what validation and offline evaluation ask ---------------------------------


def expected_protocols(
    name: str, visible: list[Sample], ir: list[Sample], shot: str, sampling: str = "seeded"
) -> dict[str, list]:
    """The sets each dataset was evaluated on before the registry, from the builders called directly."""
    if name in ("sysu", "synth"):
        rgb2ir = llcm_eval_sets(visible, ir, "rgb2ir", 3, 5, sampling)
        for es in rgb2ir:
            es.name = "rgb2ir"
        return {
            f"all-{shot}": sysu_eval_sets(ir, visible, "all", shot, 3, 5, sampling),
            f"indoor-{shot}": sysu_eval_sets(ir, visible, "indoor", shot, 3, 5, sampling),
            "rgb2ir": rgb2ir,
        }
    if name == "regdb":
        return {d: regdb_eval_sets(visible, ir, d, REGDB_TRIAL) for d in ("ir2rgb", "rgb2ir")}
    return {d: llcm_eval_sets(visible, ir, d, 3, 5, sampling) for d in ("ir2rgb", "rgb2ir")}


@pytest.mark.parametrize("sampling", ["seeded", "standard"])
@pytest.mark.parametrize("shot", ["single", "multi"])
@pytest.mark.parametrize("name", list(DATASETS))
def test_protocols_give_the_standard_sets_in_order(
    name: str, shot: str, sampling: str, tmp_path: Path
) -> None:
    splits = load(name, tmp_path)
    visible, ir = splits.test_gallery, splits.test_query
    sets = get_spec(name).protocols(ProtocolInputs(visible, ir, 3, 5, shot, REGDB_TRIAL, sampling))
    expected = expected_protocols(name, visible, ir, shot, sampling)
    assert list(sets) == list(expected)  # the first one is what validation selects checkpoints on
    assert sets == expected
    assert all(isinstance(es, EvalSet) for group in sets.values() for es in group)


def test_protocol_sets_asks_the_spec(tmp_path: Path) -> None:
    from tvifm.data.registry import protocol_sets

    splits = load("llcm", tmp_path)
    visible, ir = splits.test_gallery, splits.test_query
    expected = expected_protocols("llcm", visible, ir, "single", "standard")  # LLCM's own sampling
    assert protocol_sets("llcm", visible, ir, trials=3, seed=5) == expected
    seeded = expected_protocols("llcm", visible, ir, "single", "seeded")
    assert protocol_sets("llcm", visible, ir, trials=3, seed=5, sampling="seeded") == seeded
    with pytest.raises(ConfigError, match="unknown dataset 'market1501'"):
        protocol_sets("market1501", visible, ir, trials=3, seed=5)
