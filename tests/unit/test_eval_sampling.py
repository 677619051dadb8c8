"""Gallery sampling: ``standard`` draws exactly what the published evaluation code draws, ``seeded`` is
unchanged, and ``eval.sampling`` picks one per dataset.

The "published code" functions below transcribe the standard algorithm (AGW's ``process_gallery_sysu``,
DEEN's ``process_gallery_llcm``, which TVI-LFM repeats): seed Python's global ``random`` with the trial,
walk the test ids as sorted zero-padded strings and the cameras in list order, and take one
``random.choice`` of the sorted full paths of each existing identity/camera folder. They run on the module
RNG, so this also checks that tvifm's private ``random.Random(trial)`` is in the same state.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from layouts import LlcmPlan, SysuPlan, build_llcm, build_sysu, llcm_rel, write_file, write_id_file

from tvifm.config import config_hash, load_config
from tvifm.data.base import Modality, Sample
from tvifm.data.registry import gallery_sampling, protocol_sets
from tvifm.data.sysu import load_sysu
from tvifm.errors import ConfigError
from tvifm.eval import llcm_eval_sets, sysu_eval_sets
from tvifm.eval.protocols import sample_gallery

SYSU_RGB_CAMERAS = {"all": ["cam1", "cam2", "cam4", "cam5"], "indoor": ["cam1", "cam2"]}
LLCM_CAMERAS = {
    "visible": [f"test_vis/cam{k}" for k in range(1, 10)],
    "ir": [f"test_nir/cam{k}" for k in (1, 2, 4, 5, 6, 7, 8, 9)],
}
TRIALS = range(10)  # the standard test loops: `for trial in range(10)`, gallery seeded with `trial`


@pytest.fixture(autouse=True)
def _keep_global_random_state() -> Iterator[None]:
    """The transcriptions seed the module RNG; other tests keep theirs."""
    state = random.getstate()
    yield
    random.setstate(state)


def _test_ids(data_path: str, id_file: str) -> list[str]:
    with open(os.path.join(data_path, id_file)) as file:
        ids = file.read().splitlines()
        ids = [int(y) for y in ids[0].split(",")]
        return ["%04d" % x for x in ids]  # noqa: UP031 (as the published code writes it)


def published_gallery(data_path: str, id_file: str, cameras: list[str], trial: int) -> list[str]:
    """The standard single-shot gallery of one trial (full paths), on the global ``random``."""
    random.seed(trial)
    files = []
    for id in sorted(_test_ids(data_path, id_file)):
        for cam in cameras:
            img_dir = os.path.join(data_path, cam, id)
            if os.path.isdir(img_dir):
                new_files = sorted([img_dir + "/" + i for i in os.listdir(img_dir)])
                files.append(random.choice(new_files))
    return files


def published_query(data_path: str, id_file: str, cameras: list[str]) -> list[str]:
    """The standard query list: every file of every test identity in the query cameras."""
    files = []
    for id in sorted(_test_ids(data_path, id_file)):
        for cam in cameras:
            img_dir = os.path.join(data_path, cam, id)
            if os.path.isdir(img_dir):
                files.extend(sorted([img_dir + "/" + i for i in os.listdir(img_dir)]))
    return files


def documented_multi_shot(data_path: str, cameras: list[str], trial: int) -> list[str]:
    """tvifm's standard multi-shot (docs/design.md): the same walk, ``random.sample`` of up to 10 per
    folder instead of one ``choice``, picks listed in file order."""
    random.seed(trial)
    files = []
    for id in sorted(_test_ids(data_path, "exp/test_id.txt")):
        for cam in cameras:
            img_dir = os.path.join(data_path, cam, id)
            if os.path.isdir(img_dir):
                new_files = sorted([img_dir + "/" + i for i in os.listdir(img_dir)])
                files.extend(sorted(random.sample(new_files, min(10, len(new_files)))))
    return files


def _rel(root: Path, paths: list[str]) -> list[str]:
    return [Path(os.path.relpath(p, root)).as_posix() for p in paths]


# --- a miniature SYSU-MM01 -------------------------------------------------------------------------------

SYSU_TEST_IDS = [533, 7, 96, 12, 250, 3]  # listed unsorted, as the real file is not guaranteed to be


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SYSU-MM01 tree with real-style names (``cam1/0007/0004.jpg``), uneven folders (1..23 images),
    identities missing from some cameras, and train/val identities the gallery must not touch."""
    rng = random.Random(11)
    images: dict[tuple[int, int], int] = {}
    for pid in [*SYSU_TEST_IDS, 1, 2, 4, 5]:
        for cam in range(1, 7):
            if cam in (2, 5) and rng.random() < 0.3:
                continue  # not every identity appears in every camera
            images[(cam, pid)] = rng.choice([1, 2, 5, 10, 11, 17, 23])
    plan = SysuPlan(train=[1, 2], val=[4, 5], test=SYSU_TEST_IDS, images=images)
    return build_sysu(tmp_path_factory.mktemp("sysu") / "SYSU-MM01", plan, decodable=False)


@pytest.mark.parametrize("search", ["all", "indoor"])
def test_standard_sysu_galleries_are_the_published_ones(sysu_root: Path, search: str) -> None:
    splits = load_sysu(sysu_root)
    sets = sysu_eval_sets(splits.test_query, splits.test_gallery, search, "single", 10, sampling="standard")
    assert [es.trial for es in sets] == list(TRIALS)
    cameras = SYSU_RGB_CAMERAS[search]
    for es in sets:
        expected = published_gallery(str(sysu_root), "exp/test_id.txt", cameras, es.trial)
        assert [s.rel for s in es.gallery] == _rel(sysu_root, expected)
    # the test can tell the samplings apart: seeded draws other galleries
    seeded = sysu_eval_sets(splits.test_query, splits.test_gallery, search, "single", 10)
    assert [es.gallery for es in seeded] != [es.gallery for es in sets]


def test_sysu_queries_are_the_published_ones(sysu_root: Path) -> None:
    splits = load_sysu(sysu_root)
    (es,) = sysu_eval_sets(splits.test_query, splits.test_gallery, trials=1, sampling="standard")
    expected = published_query(str(sysu_root), "exp/test_id.txt", ["cam3", "cam6"])
    assert sorted(s.rel for s in es.query) == sorted(_rel(sysu_root, expected))


def test_standard_multi_shot_is_the_documented_sample(sysu_root: Path) -> None:
    splits = load_sysu(sysu_root)
    sets = sysu_eval_sets(splits.test_query, splits.test_gallery, "all", "multi", 4, sampling="standard")
    for es in sets:
        expected = documented_multi_shot(str(sysu_root), SYSU_RGB_CAMERAS["all"], es.trial)
        assert [s.rel for s in es.gallery] == _rel(sysu_root, expected)


def test_one_trial_alone_is_that_trial_of_the_loop(sysu_root: Path) -> None:
    splits = load_sysu(sysu_root)
    for sampling in ("standard", "seeded"):
        loop = sysu_eval_sets(splits.test_query, splits.test_gallery, trials=10, seed=3, sampling=sampling)
        (alone,) = sysu_eval_sets(
            splits.test_query, splits.test_gallery, trials=1, seed=3, sampling=sampling, first_trial=7
        )
        assert alone == loop[7]


# --- a miniature LLCM test split -------------------------------------------------------------------------

LLCM_TEST_IDS = [1064, 9, 310, 77, 2]
LLCM_TOPS: dict[Modality, str] = {"visible": "test_vis", "ir": "test_nir"}


@pytest.fixture(scope="module")
def llcm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LLCM test split with real-style names (``test_vis/cam4/0077/0077_c04_s200103_f6403_1.jpg``),
    nine visible cameras and the standard IR cameras (no IR camera 3), uneven and missing folders."""
    root = tmp_path_factory.mktemp("llcm") / "LLCM"
    rng = random.Random(5)
    for modality, cameras in LLCM_CAMERAS.items():
        for folder in cameras:
            cam = int(folder.rsplit("cam", 1)[1])
            for pid in LLCM_TEST_IDS:
                if rng.random() < 0.25:
                    continue
                for k in rng.sample(range(1, 40), rng.choice([1, 3, 8, 13])):
                    write_file(root / llcm_rel(LLCM_TOPS[modality], cam, pid, k))
    write_id_file(root / "idx" / "test_id.txt", LLCM_TEST_IDS)
    return root


def _llcm_samples(root: Path, modality: Modality) -> list[Sample]:
    """The test samples of ``modality`` read straight off the folders (pid from the identity folder,
    camera from ``camK``), in no particular order."""
    samples = []
    for path in (root / LLCM_TOPS[modality]).glob("cam*/*/*.jpg"):
        rel = path.relative_to(root).as_posix()
        samples.append(
            Sample(str(path), rel, int(path.parent.name), int(path.parent.parent.name[3:]), modality)
        )
    random.Random(1).shuffle(samples)
    return samples


@pytest.mark.parametrize(("direction", "gallery"), [("ir2rgb", "visible"), ("rgb2ir", "ir")])
def test_standard_llcm_galleries_are_the_published_ones(
    llcm_root: Path, direction: str, gallery: str
) -> None:
    visible, ir = _llcm_samples(llcm_root, "visible"), _llcm_samples(llcm_root, "ir")
    sets = llcm_eval_sets(visible, ir, direction, trials=10, sampling="standard")
    assert [es.trial for es in sets] == list(TRIALS)
    for es in sets:
        expected = published_gallery(str(llcm_root), "idx/test_id.txt", LLCM_CAMERAS[gallery], es.trial)
        assert [s.rel for s in es.gallery] == _rel(llcm_root, expected)
    seeded = llcm_eval_sets(visible, ir, direction, trials=10)
    assert [es.gallery for es in seeded] != [es.gallery for es in sets]


# --- seeded is unchanged ---------------------------------------------------------------------------------


def _seeded_before(candidates: list[Sample], per_group: int, seed: int, trial: int) -> list[Sample]:
    """The seeded draw as it was before standard sampling existed."""
    groups: dict[tuple[int, int], list[Sample]] = {}
    for s in candidates:
        groups.setdefault((s.pid, s.cam), []).append(s)
    rng = np.random.default_rng([seed, trial])
    chosen: list[Sample] = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda s: (s.rel, s.path))
        picks = rng.choice(len(members), size=min(per_group, len(members)), replace=False)
        chosen.extend(members[i] for i in sorted(picks))
    return chosen


@pytest.mark.parametrize("per_group", [1, 10])
def test_seeded_draws_are_unchanged(sysu_root: Path, per_group: int) -> None:
    candidates = load_sysu(sysu_root).test_gallery
    for seed, trial in ((0, 0), (0, 9), (5, 2)):
        expected = _seeded_before(candidates, per_group, seed, trial)
        assert sample_gallery(candidates, per_group, trial, "seeded", seed) == expected
        assert sample_gallery(candidates[::-1], per_group, trial, "seeded", seed) == expected


def test_unknown_sampling_is_a_config_error(sysu_root: Path) -> None:
    splits = load_sysu(sysu_root)
    with pytest.raises(
        ConfigError, match="gallery sampling must be one of 'standard', 'seeded', got 'random'"
    ):
        sysu_eval_sets(splits.test_query, splits.test_gallery, sampling="random")
    with pytest.raises(ConfigError, match="first_trial must be an integer >= 0"):
        sysu_eval_sets(splits.test_query, splits.test_gallery, first_trial=-1)


# --- eval.sampling per dataset ---------------------------------------------------------------------------


def test_auto_is_standard_for_the_real_datasets_and_seeded_for_synthtri() -> None:
    assert {name: gallery_sampling(name) for name in ("synth", "sysu", "llcm")} == {
        "synth": "seeded",
        "sysu": "standard",
        "llcm": "standard",
    }
    assert gallery_sampling("regdb") is None and gallery_sampling("regdb", "standard") is None
    assert (
        gallery_sampling("sysu", "seeded") == "seeded" and gallery_sampling("synth", "standard") == "standard"
    )
    with pytest.raises(ConfigError, match=r"eval\.sampling must be one of auto, standard, seeded"):
        gallery_sampling("sysu", "numpy")


def test_protocol_sets_draw_with_the_resolved_sampling(sysu_root: Path) -> None:
    splits = load_sysu(sysu_root)
    vis, ir = splits.test_gallery, splits.test_query
    auto = protocol_sets("sysu", vis, ir, trials=3, seed=2)
    standard = sysu_eval_sets(ir, vis, "all", "single", 3, 2, "standard")
    assert auto["all-single"] == standard
    synth = protocol_sets("synth", vis, ir, trials=3, seed=2)
    assert synth["all-single"] == sysu_eval_sets(ir, vis, "all", "single", 3, 2, "seeded")
    assert protocol_sets("sysu", vis, ir, trials=3, seed=2, sampling="seeded")["all-single"] != standard


def test_eval_sampling_is_validated_and_identifies_runs_by_what_it_draws() -> None:
    assert load_config("tiny").eval.sampling == "auto"
    with pytest.raises(ConfigError, match=r"eval\.sampling"):
        load_config("tiny", ["eval.sampling=numpy"])
    synth = load_config("tiny")  # SynthTri: auto is seeded
    assert config_hash(load_config("tiny", ["eval.sampling=seeded"])) == config_hash(synth)
    assert config_hash(load_config("tiny", ["eval.sampling=standard"])) != config_hash(synth)
    sysu = load_config("tiny", ["data.dataset=sysu"])
    assert sysu.gallery_sampling() == "standard"
    assert config_hash(load_config("tiny", ["data.dataset=sysu", "eval.sampling=standard"])) == config_hash(
        sysu
    )


# --- tvifm data gallery ----------------------------------------------------------------------------------


def _audit(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, list[str]]:
    from tvifm.cli import main

    assert main(["data", "gallery", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_lists_a_trial_as_the_published_code_does(sysu_root: Path, capsys) -> None:
    root = str(sysu_root)
    listed = _audit(capsys, "--dataset", "sysu", "--root", root, "--trial", "4")
    assert set(listed) == {"query", "gallery"}
    assert listed["gallery"] == _rel(
        sysu_root, published_gallery(root, "exp/test_id.txt", SYSU_RGB_CAMERAS["all"], 4)
    )
    assert sorted(listed["query"]) == sorted(
        _rel(sysu_root, published_query(root, "exp/test_id.txt", ["cam3", "cam6"]))
    )
    indoor = _audit(capsys, "--dataset", "sysu", "--root", root, "--trial", "0", "--search", "indoor")
    assert indoor["gallery"] == _rel(
        sysu_root, published_gallery(root, "exp/test_id.txt", SYSU_RGB_CAMERAS["indoor"], 0)
    )
    multi = _audit(capsys, "--dataset", "sysu", "--root", root, "--trial", "2", "--shot", "multi")
    assert multi["gallery"] == _rel(sysu_root, documented_multi_shot(root, SYSU_RGB_CAMERAS["all"], 2))


def test_cli_lists_seeded_trials_as_the_evaluation_draws_them(sysu_root: Path, capsys) -> None:
    splits = load_sysu(sysu_root)
    listed = _audit(
        capsys,
        "--dataset",
        "sysu",
        "--root",
        str(sysu_root),
        "--trial",
        "3",
        "--sampling",
        "seeded",
        "--seed",
        "8",
    )
    expected = sysu_eval_sets(splits.test_query, splits.test_gallery, trials=4, seed=8)[3]
    assert listed == {"query": [s.rel for s in expected.query], "gallery": [s.rel for s in expected.gallery]}


def test_cli_lists_an_llcm_trial_as_the_published_code_does(tmp_path: Path, capsys) -> None:
    plan = LlcmPlan(
        train={"visible": {(2, 1): 2}, "ir": {(4, 1): 1}},
        test_ids=[12, 3, 40],
        test={
            "visible": {(1, 12): 4, (2, 12): 7, (9, 3): 3, (5, 40): 12, (6, 40): 1, (1, 3): 5},
            "ir": {(4, 12): 3, (7, 3): 2, (1, 40): 4},
        },
    )
    root = build_llcm(tmp_path / "LLCM", plan, decodable=False)
    for trial in (0, 6):
        listed = _audit(capsys, "--dataset", "llcm", "--root", str(root), "--trial", str(trial))
        published = published_gallery(str(root), "idx/test_id.txt", LLCM_CAMERAS["visible"], trial)
        assert listed["gallery"] == _rel(root, published)
        queries = published_query(str(root), "idx/test_id.txt", LLCM_CAMERAS["ir"])
        assert sorted(listed["query"]) == sorted(_rel(root, queries))


def test_cli_summary_names_the_sampling_and_counts(sysu_root: Path, capsys) -> None:
    from tvifm.cli import main

    assert main(["data", "gallery", "--dataset", "sysu", "--root", str(sysu_root), "--trial", "1"]) == 0
    out = capsys.readouterr().out
    splits = load_sysu(sysu_root)
    groups = {(s.pid, s.cam) for s in splits.test_gallery}
    assert "sysu-all-single trial 1 (standard sampling)" in out
    assert f"{len(splits.test_query)} ir images" in out and f"{len(groups)} visible images" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "sysu", "--trial", "-1"], "trial must be an integer >= 0"),
        (["--dataset", "sysu", "--trial", "0", "--seed", "3"], "a seed applies to seeded sampling only"),
        (["--dataset", "llcm", "--trial", "0", "--search", "indoor"], "search and shot choose SYSU-MM01"),
        (["--dataset", "sysu", "--trial", "0", "--root-missing"], "does not exist"),
    ],
)
def test_cli_bad_input_is_a_clear_error(sysu_root: Path, tmp_path: Path, capsys, args, message) -> None:
    from tvifm.cli import main

    root = str(tmp_path / "nowhere") if "--root-missing" in args else str(sysu_root)
    argv = ["data", "gallery", "--root", root, *[a for a in args if a != "--root-missing"]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_cli_offers_only_datasets_with_gallery_sampling(sysu_root: Path, capsys) -> None:
    from tvifm.cli import main

    with pytest.raises(SystemExit):
        main(["data", "gallery", "--dataset", "regdb", "--root", str(sysu_root), "--trial", "0"])
    assert "invalid choice: 'regdb'" in capsys.readouterr().err


# --- results say which sampling they used ----------------------------------------------------------------


def test_results_tables_say_how_the_galleries_were_drawn() -> None:
    from tvifm.eval.offline import METRIC_KEYS, format_results
    from tvifm.eval.report import markdown_table

    metrics = dict.fromkeys(METRIC_KEYS, 0.5)
    report = {"run": "runs/x", "dataset": "sysu", "stage": "base", "sampling": "standard", "trials": 10}
    report["protocols"] = {"all-single": {"ir": metrics}}
    regdb = {**report, "dataset": "regdb", "sampling": None, "trials": 1}
    for table in (format_results, markdown_table):
        assert "gallery sampling: standard, 10 trials" in table(report)
        assert "gallery sampling: seeded, 10 trials" in table({**report, "sampling": "seeded"})
        assert "gallery sampling: none (every gallery image)" in table(regdb)
        assert "gallery sampling: not recorded" in table({k: v for k, v in report.items() if k != "sampling"})
