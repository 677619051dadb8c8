"""Evaluate a trained run on a dataset's test split: every protocol, every query mode, trial-averaged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tvifm.config.loader import config_hash
from tvifm.data.registry import gallery_sampling, load_dataset, protocol_sets
from tvifm.data.sidecars import load_text_for
from tvifm.data.storage import local_dataset
from tvifm.eval.evaluator import evaluate_model
from tvifm.models.factory import load_run
from tvifm.models.query import STAGE_MODES, check_modes
from tvifm.models.run import RunDir

METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def evaluate_run(
    run_dir: str | Path,
    *,
    dataset: str | None = None,
    root: str | None = None,
    trial: int | None = None,
    modes: Sequence[str] | None = None,
    trials: int | None = None,
    sampling: str | None = None,
    rerank: bool | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Test-split metrics of a run: ``{"protocols": {name: {mode: {rank1, ..., mAP, mINP}}}, ...}``.

    ``dataset``/``root``/``trial`` default to the run's training data; ``modes`` to every mode its
    stage supports; ``trials`` to the config's ``eval.trials``; ``sampling`` (``auto``, ``standard``,
    ``seeded``) to its ``eval.sampling``. The report's ``sampling`` is the gallery sampling used
    (``"standard"``, ``"seeded"``, or ``None`` for a dataset without gallery sampling). ``rerank``
    (default: the run's ``eval.rerank``) turns k-reciprocal re-ranking on or off; the report says which.
    """
    loaded = load_run(run_dir, RunDir(run_dir).config().device)
    model, cfg, meta = loaded.model, loaded.config, loaded.meta
    name = dataset or cfg.data.dataset
    modes = check_modes(modes or STAGE_MODES[meta["stage"]])
    splits = load_dataset(name, local_dataset(root or cfg.data.root), trial or cfg.data.trial)
    text = load_text_for(splits)
    setting = sampling or cfg.eval.sampling
    sets = protocol_sets(
        name,
        splits.test_gallery,
        splits.test_query,
        trials=trials or cfg.eval.trials,
        seed=cfg.eval.seed,
        shot=cfg.eval.shot,
        trial_id=trial or cfg.data.trial,
        sampling=setting,
    )
    if "rgb2ir" not in modes:
        sets = {k: v for k, v in sets.items() if v[0].query[0].modality == "ir"}
    if not set(modes) - {"rgb2ir"}:
        sets = {k: v for k, v in sets.items() if v[0].query[0].modality == "visible"}
    if rerank is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, rerank=rerank))
    results = evaluate_model(model, sets, text if text.num_captioned else None, cfg, modes, progress)
    return {
        "run": str(run_dir),
        "stage": meta["stage"],
        "dataset": name,
        "root": str(splits.root),
        "config_hash": config_hash(cfg),
        "sampling": gallery_sampling(name, setting),
        "trials": max((len(v) for v in sets.values()), default=0),
        "rerank": _rerank_note(cfg),
        "protocols": results,
    }


def format_results(report: dict[str, Any]) -> str:
    """A plain-text table of an :func:`evaluate_run` report (percentages)."""
    note = sampling_note(report)
    if rerank := report.get("rerank"):
        note += f"; k-reciprocal re-ranking (k1={rerank['k1']}, k2={rerank['k2']}, lambda={rerank['lambda']})"
    lines = [f"{report['dataset']} ({report['stage']} model, {report['run']}); {note}"]
    header = f"{'protocol':<16}{'mode':<10}{'R1':>7}{'R5':>7}{'R10':>7}{'R20':>7}{'mAP':>7}{'mINP':>7}"
    lines.append(header)
    for proto, by_mode in report["protocols"].items():
        for mode, m in by_mode.items():
            vals = [m.get(k, float("nan")) * 100 for k in METRIC_KEYS]
            lines.append(f"{proto:<16}{mode:<10}" + "".join(f"{v:7.2f}" for v in vals))
    return "\n".join(lines)


def _rerank_note(cfg: Any) -> dict[str, Any] | None:
    e = cfg.eval
    return {"k1": e.rerank_k1, "k2": e.rerank_k2, "lambda": e.rerank_lambda} if e.rerank else None


def sampling_note(report: dict[str, Any]) -> str:
    """How a report's galleries were drawn, in words: ``"gallery sampling: standard, 10 trials"``."""
    if "sampling" not in report:  # a report written before tvifm recorded it
        return "gallery sampling: not recorded"
    sampling = report["sampling"]
    if sampling is None:
        return "gallery sampling: none (every gallery image)"
    trials = report.get("trials")
    count = f", {trials} trial{'s' if trials != 1 else ''}" if trials else ""
    return f"gallery sampling: {sampling}{count}"
