"""Score thresholds for open-set search (``min_score`` of ``POST /v1/search``), calibrated on the
validation identities of a trained run (``benchmarks/calibrate_scores.py``).

A search score is the inner product of unit embeddings, i.e. the cosine similarity of query and gallery
item. Every (query, gallery item) pair of the validation identities is a *true match* (same identity)
or a *false match* (another identity). For a threshold ``t``, the false-match rate (FMR) is the share of
false-match pairs scoring ``>= t`` (what a threshold lets through that it should not), recall the share
of true-match pairs scoring ``>= t``, and ``queries found`` the share of queries that keep at least one
true match above ``t`` (the person can still be found). :func:`calibrate` picks ``t`` at given false-match
rates; :func:`validation_scores` computes the pairs' scores per query mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

RATES = (0.01, 0.05)


@dataclass
class PairScores:
    """Scores of every (query, gallery item) pair of one query mode, split by identity agreement."""

    mode: str
    true: np.ndarray  # scores of true-match pairs
    false: np.ndarray  # scores of false-match pairs
    best_true: np.ndarray  # per query: its best true-match score (-inf without one)


@dataclass
class Threshold:
    """A threshold chosen for a target false-match rate, with what it achieves on the pairs."""

    target_fmr: float
    threshold: float
    fmr: float
    recall: float
    queries_found: float


def pair_scores(
    mode: str,
    queries: np.ndarray,
    query_ids: Sequence[int],
    gallery: np.ndarray,
    gallery_ids: Sequence[int],
) -> PairScores:
    """Split the scores of all ``queries x gallery`` pairs (unit embeddings) by identity agreement."""
    scores = np.asarray(queries, dtype=np.float64) @ np.asarray(gallery, dtype=np.float64).T
    same = np.asarray(query_ids)[:, None] == np.asarray(gallery_ids)[None, :]
    best_true = np.where(same, scores, -np.inf).max(axis=1)
    return PairScores(mode, scores[same], scores[~same], best_true)


def calibrate(pairs: PairScores, rates: Sequence[float] = RATES) -> list[Threshold]:
    """For each target false-match rate ``r``: the lowest threshold letting through at most ``r`` of
    the false-match pairs, and the FMR, recall and share of queries found it achieves."""
    if not len(pairs.false) or not len(pairs.true):
        raise ValueError(f"mode {pairs.mode}: calibration needs both true- and false-match pairs")
    ordered = np.sort(pairs.false)[::-1]
    out = []
    for rate in rates:
        allowed = int(np.floor(rate * len(ordered)))  # false matches that may score >= t
        t = float(np.nextafter(ordered[allowed], np.inf)) if allowed < len(ordered) else float(ordered[-1])
        out.append(
            Threshold(
                target_fmr=rate,
                threshold=t,
                fmr=float(np.mean(pairs.false >= t)),
                recall=float(np.mean(pairs.true >= t)),
                queries_found=float(np.mean(pairs.best_true >= t)),
            )
        )
    return out


def validation_scores(run_dir: str | Path, modes: Sequence[str] | None = None) -> dict[str, PairScores]:
    """Pair scores on the validation identities of a run, per query mode: IR queries (their modes'
    embeddings, as offline evaluation builds them) against every visible validation image, and for
    ``rgb2ir`` visible queries against every IR validation image."""
    from tvifm.eval.embeddings import build_query_bank, gallery_embeddings
    from tvifm.experiments.diagnostics import validation_run

    run = validation_run(run_dir)
    model, splits = run.loaded.model, run.splits
    modes = tuple(modes or run.loaded.modes)
    visible, ir = list(splits.val_visible), list(splits.val_ir)
    g_visible = gallery_embeddings(model, visible, run.size).numpy()
    out = {}
    ir_modes = [m for m in modes if m != "rgb2ir"]
    if ir_modes:
        seed = run.loaded.config.eval.seed
        bank = build_query_bank(model, ir, visible, run.text, run.size, modes=ir_modes, seed=seed)
        for mode in ir_modes:
            q = bank.embeddings[mode].numpy()
            out[mode] = pair_scores(mode, q, [s.pid for s in ir], g_visible, [s.pid for s in visible])
    if "rgb2ir" in modes:
        g_ir = gallery_embeddings(model, ir, run.size).numpy()
        out["rgb2ir"] = pair_scores("rgb2ir", g_visible, [s.pid for s in visible], g_ir, [s.pid for s in ir])
    return out


def summary(scores: Mapping[str, PairScores], rates: Sequence[float] = RATES) -> dict[str, Any]:
    """JSON-ready thresholds and pair counts per mode."""
    return {
        mode: {
            "true_pairs": len(p.true),
            "false_pairs": len(p.false),
            "queries": len(p.best_true),
            "true_mean": float(np.mean(p.true)),
            "false_mean": float(np.mean(p.false)),
            "thresholds": [asdict(t) for t in calibrate(p, rates)],
        }
        for mode, p in scores.items()
    }


def plot_scores(scores: Mapping[str, PairScores], path: str | Path, rates: Sequence[float] = RATES) -> Path:
    """Histograms of true- and false-match scores per mode with the calibrated thresholds; a PNG."""
    from tvifm.eval.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(scores), figsize=(3.2 * len(scores), 3.0), dpi=120, squeeze=False)
    bins = np.linspace(-1.0, 1.0, 81)
    for ax, (mode, p) in zip(axes[0], scores.items(), strict=True):
        ax.hist(p.false, bins=bins, density=True, alpha=0.55, label="false match")
        ax.hist(p.true, bins=bins, density=True, alpha=0.55, label="true match")
        for t, style in zip(calibrate(p, rates), ("--", ":"), strict=False):
            ax.axvline(t.threshold, color="k", linestyle=style, label=f"FMR {100 * t.target_fmr:g}%")
        ax.set_title(mode)
        ax.set_xlabel("score (cosine)")
    axes[0][0].set_ylabel("density")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
