"""Markdown tables both ablation pages (``docs/ablation.md``, ``docs/ablation_captioned.md``) show.

A *summary* is :func:`tvifm.experiments.ablation.summarise`'s table (``{row: {protocol: {metric: (mean,
std)}}}``, percent); a *diagnosis* maps a validation figure's name to its (mean, std) over seeds.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from tvifm.experiments.ablation import METRICS, PROTOCOLS, REFERENCES, ROWS
from tvifm.experiments.diagnostics import CHOICE_MODES, MER_TERM_SUMS

Diagnosis = Mapping[str, tuple[float, float]]


def rank1(table: Mapping[str, Any], name: str) -> float:
    """Mean all-search Rank-1 of row ``name`` of a summary."""
    return table[name]["all-single"]["rank1"][0]


def table_lines(table: Mapping[str, Any]) -> list[str]:
    """The ablation table: a row per step, mean ± std over seeds of each protocol's metrics."""
    cols = [f"{PROTOCOLS[p]} {m}" for p in PROTOCOLS for m in ("R1", "mAP", "mINP")]
    lines = ["| row | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for row in ROWS:
        cells = [f"{table[row.name][p][m][0]:.1f} ± {table[row.name][p][m][1]:.1f}" for p in PROTOCOLS
                 for m in METRICS]  # fmt: skip
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


def step_lines(table: Mapping[str, Any]) -> tuple[list[str], set[str]]:
    """A line per step with its all-search Rank-1 change, and the rows that did not clearly help (a
    change within the spread over seeds, or none)."""
    steps, flat = [], set()
    for prev, row in itertools.pairwise(ROWS):
        delta = rank1(table, row.name) - rank1(table, prev.name)
        spread = max(table[r.name]["all-single"]["rank1"][1] for r in (prev, row))
        verdict = "helps" if delta > 0 else "does not help"
        if abs(delta) <= spread:
            verdict += ", within the spread over seeds"
            flat.add(row.name)
        elif delta <= 0:
            flat.add(row.name)
        steps.append(f"- {row.name}: {delta:+.1f} Rank-1 points ({verdict})")
    return steps, flat


def reference_lines(table: Mapping[str, Any]) -> list[str]:
    """A line per reference query (not a step) with its Rank-1 and mAP under each protocol."""
    lines = ["References, not steps:", ""]
    for ref in REFERENCES:
        cells = ", ".join(
            f"{PROTOCOLS[p]} R1 {table[ref.name][p]['rank1'][0]:.1f} / mAP {table[ref.name][p]['mAP'][0]:.1f}"
            for p in PROTOCOLS
        )
        lines.append(f"- {ref.name}: {cells}")
    return lines


def novelty_table(novelty: Mapping[str, Mapping[str, float]], label: str = "captions") -> list[str]:
    """A row of :func:`~tvifm.text.augment.rephrasing_novelty` figures per caption source."""
    lines = [
        f"| {label} | people | captions per person | words of a rephrasing no caption of the person uses | "
        "caption vs its rephrasing (Jaccard) | caption vs another caption of the person |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {f['people']:.0f} | {f['rephrasings'] / f['people']:.1f} | "
        f"{100 * f['new_words']:.1f} % | {f['caption_vs_rephrasing']:.2f} | {f['caption_vs_caption']:.2f} |"
        for name, f in novelty.items()
    ]
    return lines


def choice_lines(diagnosis: Diagnosis, choice: Mapping[str, str], what: str) -> list[str]:
    """A table of :func:`~tvifm.experiments.diagnostics.choice_figures` (mean ± std over seeds), a row
    per label of ``choice``."""
    lines = [
        f"| {what} | " + " | ".join(f"{m} R1" for m in CHOICE_MODES) + " |",
        "|---|" + "---:|" * len(CHOICE_MODES),
    ]
    for label in choice:
        cells = (diagnosis[f"{label} / {m}"] for m in CHOICE_MODES)
        lines.append(f"| {label} | " + " | ".join(f"{m:.1f} ± {sd:.1f}" for m, sd in cells) + " |")
    return lines


def spread_diff(diagnosis: Diagnosis, a: str, b: str, mode: str) -> str:
    """``a`` less ``b`` on ``mode`` (validation figures), and whether it is beyond the spread over seeds."""
    (ma, sa), (mb, sb) = diagnosis[f"{a} / {mode}"], diagnosis[f"{b} / {mode}"]
    side = "within" if abs(ma - mb) <= max(sa, sb) else "beyond"
    return f"{ma - mb:+.1f} ({side} the spread over seeds)"


def terms_lines(terms: Diagnosis) -> list[str]:
    """The validation Rank-1 of each sum of :data:`~tvifm.experiments.diagnostics.MER_TERM_SUMS`."""
    lines = ["| query (equal-weight sum of unit embeddings) | validation all-search R1 |", "|---|---:|"]
    lines += [f"| {name} | {terms[name][0]:.1f} ± {terms[name][1]:.1f} |" for name in MER_TERM_SUMS]
    return lines
