"""Human-facing outputs of an evaluation: a Markdown table, a CMC plot and a ranked-retrieval grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tvifm.data.images import read_image
from tvifm.data.registry import load_dataset, protocol_sets
from tvifm.data.sidecars import load_text_for
from tvifm.data.storage import local_dataset
from tvifm.eval.embeddings import build_query_bank, gallery_embeddings
from tvifm.eval.offline import METRIC_KEYS, sampling_note
from tvifm.eval.plots import RankedRow, plot_cmc, retrieval_grid
from tvifm.models.factory import load_run


def markdown_table(report: dict[str, Any]) -> str:
    """The evaluation report as a Markdown table (percentages, trial means)."""
    lines = [
        f"Test results of `{report['run']}` on {report['dataset']} ({report['stage']} model), "
        f"trial means, %; {sampling_note(report)}.",
        "",
        "| protocol | mode | R1 | R5 | R10 | R20 | mAP | mINP |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for proto, by_mode in report["protocols"].items():
        for mode, m in by_mode.items():
            cells = " | ".join(f"{100 * m[k]:.2f}" if k in m else "-" for k in METRIC_KEYS)
            lines.append(f"| {proto} | {mode} | {cells} |")
    return "\n".join(lines) + "\n"


def cmc_plot(report: dict[str, Any], path: str | Path) -> Path:
    """CMC curves of every query mode of the first IR->RGB protocol of a report."""
    proto = next(iter(report["protocols"]))
    curves = {mode: m["cmc"] for mode, m in report["protocols"][proto].items() if "cmc" in m}
    return plot_cmc(curves, path, title=f"{report['dataset']} {proto}")


def ranked_grid(
    run_dir: str | Path,
    path: str | Path,
    *,
    mode: str = "ensemble",
    queries: int = 6,
    top_k: int = 5,
    seed: int = 0,
) -> Path:
    """Top-``top_k`` visible gallery images for a few IR test queries (first trial of the first protocol)."""
    loaded = load_run(run_dir)
    model, cfg, meta = loaded.model, loaded.config, loaded.meta
    if meta["stage"] != "joint":
        mode = "ir"
    splits = load_dataset(cfg.data.dataset, local_dataset(cfg.data.root), cfg.data.trial)
    text = load_text_for(splits)
    sets = protocol_sets(
        cfg.data.dataset,
        splits.test_gallery,
        splits.test_query,
        trials=1,
        seed=cfg.eval.seed,
        sampling=cfg.eval.sampling,
    )
    eval_set = next(iter(sets.values()))[0]
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(eval_set.query), size=min(queries, len(eval_set.query)), replace=False))
    chosen = [eval_set.query[i] for i in picks]
    bank = build_query_bank(
        model,
        chosen,
        eval_set.gallery,
        text if mode != "ir" else None,
        cfg.data.image_size,
        modes=(mode,),
        seed=cfg.eval.seed,
    )
    g_emb = gallery_embeddings(model, eval_set.gallery, cfg.data.image_size)
    scores = bank.embeddings[mode] @ g_emb.t()
    rows = []
    for q, row in zip(chosen, scores, strict=True):
        top = row.topk(min(top_k, len(eval_set.gallery)))
        gallery = [eval_set.gallery[j] for j in top.indices.tolist()]
        rows.append(
            RankedRow(
                query=read_image(q.path),
                query_label=f"id {q.pid} cam {q.cam}",
                gallery=[read_image(g.path) for g in gallery],
                correct=[g.pid == q.pid for g in gallery],
                scores=[float(v) for v in top.values],
            )
        )
    return retrieval_grid(
        rows, path, title=f"{cfg.data.dataset}: IR queries, {mode} mode, top-{top_k} visible"
    )
