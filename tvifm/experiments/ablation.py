"""The TVI-FM ablation on SynthTri: its rows, its stage-2 trainings, how they are trained, evaluated on the
test identities and summarised over seeds (``benchmarks/ablation.py`` writes ``docs/ablation.md``).

Rows (docs/design.md, as in the paper's ablation):

1. IR baseline            stage 1 only, IR image queries
2. + fusion               stage 2 trains the text encoder on the visible and fusion streams only;
                          fusion queries (f_ir + f_rgb_txt - f_ir_txt)
3. + joint learning       stage 2 adds the description's own stream: the tiny preset's joint.streams
                          {RGB, fusion, RGB text}; fusion queries. The design (and the paper preset)
                          also trains on the frozen RGB-CA and IR streams; on this small backbone that
                          costs the fusion query, so the tiny preset leaves them out, a choice made on
                          the validation identities (CANDIDATES: all five streams, validation only)
4. + ensemble retrieval   the model of row 3 with ensemble (MER) queries
5. + text augmentation    row 4 with each caption replaced by its rephrasing with probability 0.5

Every stage-2 training is an experiment preset ``ablation-<key>`` (``tvifm/experiments/presets``) that
extends ``ablation`` (the ablation's longer schedule), which extends ``tiny``. The ablation resolves its
base config once (``--config`` with the ``ablation`` layer and the command-line overrides), saves it under
``--out`` and trains every variant from it with the variant's layer and the seed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvifm.config import load_config, save_config
from tvifm.config.loader import CONFIG_FILENAME, read_saved_config
from tvifm.config.schema import Config
from tvifm.errors import TvifmError
from tvifm.experiments.presets import as_overrides, preset_layer, with_layer
from tvifm.models.run import RunDir

PROTOCOLS = {"all-single": "all-search", "indoor-single": "indoor-search"}
METRICS = ("rank1", "mAP", "mINP")
SCHEDULE = "ablation"  # the experiment preset every variant extends (the ablation's schedule)
SCHEDULE_BASE = "tiny"  # the preset SCHEDULE extends
EXPERIMENT = "tvifm-ablation"  # the MLflow experiment of the rows


@dataclass(frozen=True)
class Row:
    """One line of the ablation: which stage-2 training (if any) and which query mode."""

    name: str
    joint: str | None  # key of the stage-2 variant, None for the stage-1 model
    mode: str


# the stage-2 trainings of the rows: key -> experiment preset ``ablation-<key>``
VARIANTS = ("fusion-only", "joint", "joint-aug")
ROWS = [
    Row("IR baseline", None, "ir"),
    Row("+ fusion", "fusion-only", "fusion"),
    Row("+ joint learning", "joint", "fusion"),
    Row("+ ensemble retrieval", "joint", "ensemble"),
    Row("+ text augmentation", "joint-aug", "ensemble"),
]
# Stage-2 candidates, trained for every seed and judged on the validation identities only, at each run's
# selected checkpoint; no test row uses them: all five streams against joint learning's cost to the
# fusion query, and the table's variants with the previous stage 2 (12 epochs, decay at 10) against the
# longer one.
CANDIDATES = ("joint-five-12", *(f"{key}-12" for key in VARIANTS))
# stage-2 trainings compared on the validation identities: label -> variant or candidate
STREAM_CHOICE = {
    "visible, fusion (row 2)": "fusion-only-12",
    "all five streams (the method's)": "joint-five-12",
    "visible, fusion, description (tiny preset, row 3)": "joint-12",
}
SCHEDULE_CHOICE = {
    "12 epochs (decay at 10), no text augmentation": "joint-12",
    "12 epochs (decay at 10), text augmentation": "joint-aug-12",
    "36 epochs (decay at 30), no text augmentation": "joint",
    "36 epochs (decay at 30), text augmentation": "joint-aug",
}
# (stage-2 run key, query mode) whose validation Rank-1 at the end of stage 2 the report follows
LATE = {
    "joint fusion": ("joint", "fusion"),
    "fusion-only fusion": ("fusion-only", "fusion"),
    "12-epoch joint ensemble": ("joint-12", "ensemble"),
}
# not steps of the ablation: the description alone, to show how strong the text is on its own and what
# joint learning does to it
REFERENCES = [
    Row("text query alone, stage 2 on visible + fusion only", "fusion-only", "text"),
    Row("text query alone, joint learning", "joint", "text"),
]


# -- configs -------------------------------------------------------------------------------------------
def preset_name(key: str) -> str:
    """The experiment preset of the stage-2 variant or candidate ``key``."""
    return f"{SCHEDULE}-{key}"


def ablation_config(config: str | Path = SCHEDULE_BASE, overrides: Iterable[str] = ()) -> Config:
    """The config every run of the ablation starts from: ``config`` (a preset name or YAML file) with the
    ablation's schedule (the ``ablation`` preset's settings over ``tiny``), then ``overrides``."""
    return with_layer(load_config(config), preset_layer(SCHEDULE, SCHEDULE_BASE), overrides)


def schedule_overrides() -> list[str]:
    """The ablation's schedule as ``key=value`` overrides of ``tiny``."""
    return as_overrides(preset_layer(SCHEDULE, SCHEDULE_BASE))


def previous_stage2() -> list[str]:
    """The previous 12-epoch stage 2 (of the ``*-12`` candidates) as ``key=value`` overrides."""
    return as_overrides(preset_layer(preset_name("joint-12"), preset_name("joint")))


def save_base_config(cfg: Config, out: Path) -> Path:
    """The resolved config every run starts from, saved once under ``out`` (kept when already there)."""
    path = out / CONFIG_FILENAME
    if not path.exists():
        save_config(cfg, out)
    return path


def variant_config(base: Path, key: str, seed: int) -> Config:
    """The config of stage-2 variant ``key`` for ``seed``: the saved base config ``base`` with the
    settings its preset adds over the ablation's schedule."""
    return with_layer(read_saved_config(base), preset_layer(preset_name(key), SCHEDULE), [f"seed={seed}"])


# -- training ------------------------------------------------------------------------------------------
def prepare_data(cfg: Config) -> None:
    """SynthTri at ``data.root`` with rephrasings (``aug_description``) for text augmentation."""
    from tvifm.pipeline import prepare_synth
    from tvifm.text.augment import augment_sidecars

    prepare_synth(cfg)
    augment_sidecars(cfg.data.root, cfg.data.dataset)


def train_seed(
    cfg: Config, seed: int, out: Path, keys: Iterable[str] = (*VARIANTS, *CANDIDATES)
) -> dict[str, Path]:
    """Stage 1 and the stage-2 trainings ``keys`` (the variants and candidates) for one seed, under
    ``out/seed<seed>``; each run resumes if unfinished and is reused if finished."""
    seed_dir = out / f"seed{seed}"
    path = save_base_config(cfg, out)
    runs = {"base": seed_dir / "base"}
    timed_train(load_config(path, [f"seed={seed}"]), "base", runs["base"], seed_dir)
    runs.update(train_stage2(path, seed, seed_dir, {key: key for key in keys}, runs["base"]))
    return runs


def train_stage2(
    base: Path, seed: int, seed_dir: Path, trainings: Mapping[str, str], init: Path
) -> dict[str, Path]:
    """Stage-2 runs ``seed_dir/<name>`` from the stage-1 run ``init``, one per ``name -> variant key``
    of ``trainings``, each with :func:`variant_config` of the saved base config ``base``."""
    runs = {}
    for name, key in trainings.items():
        runs[name] = seed_dir / name
        timed_train(variant_config(base, key, seed), "joint", runs[name], seed_dir, init=init)
    return runs


def timed_train(cfg: Config, stage: str, run_dir: Path, seed_dir: Path, init: Path | None = None) -> None:
    """Train (or resume, or reuse) one run; the minutes it trained now go to the seed's record."""
    from tvifm.engine.trainer import train

    epochs = cfg.base.epochs if stage == "base" else cfg.joint.epochs
    if RunDir(run_dir).is_finished(epochs):
        train(cfg, stage, run_dir, init=init, progress=False)  # checks the config, trains nothing
        return
    started = time.time()
    train(cfg, stage, run_dir, init=init, progress=False)
    record_minutes(seed_dir, (time.time() - started) / 60)


def record_minutes(seed_dir: Path, minutes: float) -> None:
    """Add ``minutes`` of training to the record in ``seed_dir`` (wall clock of the runs trained there)."""
    record = seed_dir / "train_minutes.txt"
    before = float(record.read_text()) if record.is_file() else 0.0
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f"{before + minutes:.1f}\n")


def train_minutes(out: Path, seeds: list[int]) -> dict[int, float]:
    """Minutes each seed's runs trained (wall clock, recorded by :func:`timed_train`)."""
    return {s: float((out / f"seed{s}" / "train_minutes.txt").read_text()) for s in seeds}


def finished_runs(runs: Mapping[str, Path], then: str) -> dict[str, Path]:
    """``runs`` when every one holds a finished run, else a :class:`~tvifm.errors.TvifmError` naming the
    missing ones and ``then``, what to run first."""
    missing = [str(path) for path in runs.values() if RunDir(path).missing()]
    if missing:
        raise TvifmError(f"missing runs {missing}; {then}")
    return dict(runs)


def train_captioned_seed(cfg: Config, seed: int, out: Path) -> dict[str, Path]:
    """The variants' stage 2 for ``seed`` on re-captioned data (``cfg.data.root``), from the ablation's
    own stage-1 run ``out/seed<seed>/base``, with the previous 12-epoch stage 2 (the ``<key>-12``
    presets), under ``out/captioned/seed<seed>/<key>``."""
    base = out / f"seed{seed}" / "base"
    first = f"run `python benchmarks/ablation.py --out {out}` first"
    finished_runs({"base": base}, first)
    seed_dir = out / "captioned" / f"seed{seed}"
    path = save_base_config(cfg, out / "captioned")
    trainings = {key: f"{key}-12" for key in VARIANTS}
    return {"base": base, **train_stage2(path, seed, seed_dir, trainings, base)}


def previous_runs(out: Path, seed: int) -> dict[str, Path]:
    """The ablation's own runs of ``seed`` with the 12-epoch stage 2 (its candidates ``<key>-12``), by
    variant key (:func:`finished_runs`)."""
    runs = {"base": out / f"seed{seed}" / "base"}
    runs.update({key: out / f"seed{seed}" / f"{key}-12" for key in VARIANTS})
    return finished_runs(runs, f"run `python benchmarks/ablation.py --out {out}` first")


# -- evaluation and summaries --------------------------------------------------------------------------
def evaluate_rows(runs: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """Test metrics of every ablation row and reference for one seed (``runs``: ``base`` and the
    variants by key): ``{row name: {protocol: metrics}}``."""
    from tvifm.eval.offline import evaluate_run

    reports: dict[str, dict[str, Any]] = {}
    out: dict[str, dict[str, Any]] = {}
    for row in (*ROWS, *REFERENCES):
        key = row.joint or "base"
        if key not in reports:
            modes = ("ir",) if key == "base" else ("text", "fusion", "ensemble")
            reports[key] = evaluate_run(runs[key], modes=modes, progress=False)["protocols"]
        out[row.name] = {p: reports[key][p][row.mode] for p in PROTOCOLS}
    return out


Summary = dict[str, dict[str, dict[str, tuple[float, float]]]]


def summarise(per_seed: list[dict[str, dict[str, Any]]]) -> Summary:
    """Mean and standard deviation over seeds of each row, protocol and metric (percent)."""
    table: Summary = {}
    for row in (*ROWS, *REFERENCES):
        table[row.name] = {}
        for proto in PROTOCOLS:
            table[row.name][proto] = {}
            for metric in METRICS:
                values = np.array([100 * seed[row.name][proto][metric] for seed in per_seed])
                table[row.name][proto][metric] = (float(values.mean()), float(values.std()))
    return table


def summarise_figures(per_seed: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation over seeds of each per-seed validation figure."""
    return {
        name: (float(np.mean([s[name] for s in per_seed])), float(np.std([s[name] for s in per_seed])))
        for name in per_seed[0]
    }


def load_captioned(path: Path) -> tuple[Summary, Summary] | None:
    """The summary tables ``benchmarks/ablation_captioned.py`` saved at ``path``: the rows on the
    captioners' captions and on the generator's at the same stage 2; None if it saved no such pair."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if "generator_results" not in saved:
        return None
    return summarise(saved["results"]), summarise(saved["generator_results"])


def plot_rows_cmc(per_seed_cmc: Mapping[str, list[list[float]]], path: Path) -> None:
    """The all-search CMC curve of each row, mean over seeds, as an image at ``path``."""
    from tvifm.eval.plots import plot_cmc

    curves = {name: np.mean(np.array(cmcs), axis=0).tolist() for name, cmcs in per_seed_cmc.items()}
    plot_cmc(curves, path, title="SynthTri all-search (single-shot), mean over seeds")


def log_to_mlflow(uri: str, per_seed: list[dict[str, Any]], seeds: list[int], cfg: Config) -> None:
    """Each (row, seed) as one run of the ``tvifm-ablation`` experiment at ``uri``, comparable side by
    side (MLflow is imported here only)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    for seed, results in zip(seeds, per_seed, strict=True):
        for i, row in enumerate(ROWS):
            run = client.create_run(exp_id, run_name=f"{i + 1}. {row.name} (seed {seed})")
            rid = run.info.run_id
            client.log_param(rid, "row", row.name)
            client.log_param(rid, "seed", seed)
            client.log_param(rid, "query_mode", row.mode)
            client.log_param(rid, "stage2_variant", row.joint or "none")
            client.log_param(rid, "config", cfg.name)
            for proto, metrics in results[row.name].items():
                for metric in METRICS:
                    client.log_metric(rid, f"{PROTOCOLS[proto]}/{metric}", metrics[metric])
            client.set_terminated(rid)
