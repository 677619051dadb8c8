"""Calibrate ``min_score`` thresholds of the retrieval service on a run's validation identities.

Usage: ``python benchmarks/calibrate_scores.py --run runs/joint [--rates 0.01,0.05] [--no-docs]``

Scores every (query, gallery image) pair of the validation identities per query mode
(:mod:`tvifm.experiments.thresholds`: IR queries against every visible validation image, visible
queries against every IR one for ``rgb2ir``), prints the true- and false-match score distributions'
summary and the thresholds at the given false-match rates, and (unless ``--no-docs``) rewrites the
``## Score thresholds`` section of ``docs/serving.md`` and ``docs/score_thresholds.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tvifm.experiments.docs import write_section
from tvifm.experiments.thresholds import plot_scores, summary, validation_scores

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "serving.md"
FIGURE = ROOT / "docs" / "score_thresholds.png"


def table(report: dict[str, Any]) -> str:
    lines = [
        "| mode | true / false pairs | mean score true / false | FMR target | threshold | FMR | recall "
        "| queries found |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, r in report.items():
        for t in r["thresholds"]:
            lines.append(
                f"| {mode} | {r['true_pairs']:,} / {r['false_pairs']:,} | {r['true_mean']:.3f} / "
                f"{r['false_mean']:.3f} | {100 * t['target_fmr']:g}% | {t['threshold']:.3f} | "
                f"{100 * t['fmr']:.2f}% | {100 * t['recall']:.1f}% | {100 * t['queries_found']:.1f}% |"
            )
    return "\n".join(lines)


def section(report: dict[str, Any], run: str, commit: str) -> str:
    meta = json.loads((Path(run) / "meta.json").read_text())
    val = meta.get("best_val", {})
    rank1 = ", ".join(f"{mode} {100 * m['rank1']:.1f}" for mode, m in val.items() if "rank1" in m)
    text = (
        f"`python benchmarks/calibrate_scores.py --run {run}` (commit {commit}, {dt.date.today()}) on a "
        f"stage-{meta.get('stage')} run of the {meta.get('dataset')} dataset (epoch {meta.get('best_epoch')} "
        f"selected; validation Rank-1 {rank1}): every (query, gallery image) pair of the run's validation "
        "identities, IR queries against every visible validation image (visible against IR for `rgb2ir`, "
        "the same pairs as `ir` seen from the other side), queries embedded as offline evaluation does. "
        "FMR: share of false-match pairs (another identity) scoring at or above the threshold; recall: "
        "share of true-match pairs (same identity) at or above it; queries found: share of queries keeping "
        "at least one true match at or above it."
    )
    figure = "![true- and false-match score distributions](score_thresholds.png)"
    return f"{textwrap.fill(text, 105)}\n\n{table(report)}\n\n{figure}\n"


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run directory (stage joint for every mode)")
    parser.add_argument("--rates", default="0.01,0.05", help="target false-match rates (comma-separated)")
    parser.add_argument("--no-docs", action="store_true", help="only print")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    scores = validation_scores(args.run)
    report = summary(scores, rates)
    print(json.dumps(report, indent=1))
    text = section(report, args.run, _commit())
    print("\n" + text)
    if not args.no_docs:
        plot_scores(scores, FIGURE, rates)
        write_section(DOCS, "Score thresholds", text)
        print(f"wrote {DOCS.relative_to(ROOT)} (Score thresholds) and {FIGURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
