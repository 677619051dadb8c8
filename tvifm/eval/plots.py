"""Plots a person would rather look at: CMC curves and ranked-retrieval grids (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_cmc(curves: Mapping[str, Sequence[float]], path: str | Path, title: str = "CMC") -> Path:
    """Rank-k accuracy (%) against k, one line per label; writes a PNG and returns its path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, cmc in curves.items():
        values = 100 * np.asarray(cmc, dtype=float)
        ranks = np.arange(1, len(values) + 1)
        ax.plot(ranks, values, marker="o", markersize=3, label=f"{label} (R1 {values[0]:.1f})")
    ax.set_xlabel("rank k")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


@dataclass
class RankedRow:
    """One query and its top-ranked gallery images (``correct`` marks the true identity)."""

    query: Image.Image
    query_label: str
    gallery: list[Image.Image]
    correct: list[bool]
    scores: list[float]


def retrieval_grid(rows: Sequence[RankedRow], path: str | Path, title: str = "") -> Path:
    """A grid: each row a query then its ranked gallery, green frame = right identity, red = wrong."""
    plt = _pyplot()
    cols = 1 + max(len(r.gallery) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols, 2.3 * len(rows)), dpi=110, squeeze=False)
    for i, row in enumerate(rows):
        _show(axes[i][0], row.query, f"query\n{row.query_label}", "black")
        for j in range(1, cols):
            ax = axes[i][j]
            if j - 1 < len(row.gallery):
                colour = "tab:green" if row.correct[j - 1] else "tab:red"
                _show(ax, row.gallery[j - 1], f"#{j} {row.scores[j - 1]:.2f}", colour)
            else:
                ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _show(ax, img: Image.Image, label: str, colour: str) -> None:
    ax.imshow(np.asarray(img))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3)
    ax.set_title(label, fontsize=7)
