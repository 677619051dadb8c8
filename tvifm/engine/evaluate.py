"""Evaluate a trained run on a dataset's test split: every protocol, every query mode, trial-averaged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tvifm.config.loader import config_hash, read_saved_config
from tvifm.config.schema import Config
from tvifm.data.registry import load_dataset
from tvifm.data.sidecars import load_text_for
from tvifm.data.storage import local_dataset
from tvifm.engine import checkpoint as ckpt
from tvifm.engine.inference import QUERY_MODES
from tvifm.engine.trainer import resolve_device
from tvifm.engine.validation import evaluate_model, protocol_sets
from tvifm.errors import TvifmError
from tvifm.models.tvifm import TVIFM

METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
DEFAULT_MODES = {"base": ("ir", "rgb2ir"), "joint": ("ir", "text", "fusion", "ensemble", "rgb2ir")}


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[TVIFM, Config, dict[str, Any]]:
    """Rebuild the exact model of a run directory from its saved config and safetensors weights."""
    run_dir = Path(run_dir)
    cfg = read_saved_config(run_dir)
    meta = ckpt.read_json(run_dir / ckpt.META_FILE)
    model = TVIFM(cfg, int(meta["num_classes"]))
    ckpt.load_model(model, run_dir / ckpt.MODEL_FILE)
    model.set_stage(meta["stage"])
    model.to(resolve_device(device)).eval()
    return model, cfg, meta


def evaluate_run(
    run_dir: str | Path,
    *,
    dataset: str | None = None,
    root: str | None = None,
    trial: int | None = None,
    modes: Sequence[str] | None = None,
    trials: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Test-split metrics of a run: ``{"protocols": {name: {mode: {rank1, ..., mAP, mINP}}}, ...}``.

    ``dataset``/``root``/``trial`` default to the run's training data; ``modes`` to every mode its
    stage supports; ``trials`` to the config's ``eval.trials``.
    """
    model, cfg, meta = load_run(run_dir, cfg_device(run_dir))
    name = dataset or cfg.data.dataset
    modes = tuple(modes or DEFAULT_MODES[meta["stage"]])
    bad = set(modes) - set(QUERY_MODES)
    if bad:
        raise TvifmError(f"unknown --mode {sorted(bad)}; valid: {', '.join(QUERY_MODES)}")
    splits = load_dataset(name, local_dataset(root or cfg.data.root), trial or cfg.data.trial)
    text = load_text_for(splits)
    sets = protocol_sets(
        name,
        splits.test_gallery,
        splits.test_query,
        trials=trials or cfg.eval.trials,
        seed=cfg.eval.seed,
        shot=cfg.eval.shot,
        trial_id=trial or cfg.data.trial,
    )
    if "rgb2ir" not in modes:
        sets = {k: v for k, v in sets.items() if v[0].query[0].modality == "ir"}
    if not set(modes) - {"rgb2ir"}:
        sets = {k: v for k, v in sets.items() if v[0].query[0].modality == "visible"}
    results = evaluate_model(model, sets, text if text.num_captioned else None, cfg, modes, progress)
    return {
        "run": str(run_dir),
        "stage": meta["stage"],
        "dataset": name,
        "root": str(splits.root),
        "config_hash": config_hash(cfg),
        "protocols": results,
    }


def cfg_device(run_dir: str | Path) -> str:
    """The device to evaluate on: the run's configured device, falling back to CPU without CUDA."""
    device = read_saved_config(run_dir).device
    return "cpu" if device == "cuda" and not torch.cuda.is_available() else device


def format_results(report: dict[str, Any]) -> str:
    """A plain-text table of an :func:`evaluate_run` report (percentages)."""
    lines = [f"{report['dataset']} ({report['stage']} model, {report['run']})"]
    header = f"{'protocol':<16}{'mode':<10}{'R1':>7}{'R5':>7}{'R10':>7}{'R20':>7}{'mAP':>7}{'mINP':>7}"
    lines.append(header)
    for proto, by_mode in report["protocols"].items():
        for mode, m in by_mode.items():
            vals = [m.get(k, float("nan")) * 100 for k in METRIC_KEYS]
            lines.append(f"{proto:<16}{mode:<10}" + "".join(f"{v:7.2f}" for v in vals))
    return "\n".join(lines)
