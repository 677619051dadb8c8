"""Dataset statistics: image and identity counts per split, caption coverage and skipped images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tvifm.data.base import MODALITIES, DatasetSplits, Sample
from tvifm.data.registry import load_dataset
from tvifm.data.sidecars import TextIndex, all_samples, load_text_for

SKIPPED_EXAMPLES = 20


def dataset_stats(splits: DatasetSplits, text: TextIndex | None = None) -> dict[str, Any]:
    """JSON-ready statistics of ``splits`` (and of its captions when ``text`` is given).

    ``test.query``/``test.gallery`` count the full candidate sets of the default protocol (IR query ->
    visible gallery), before any per-trial gallery sampling.
    """
    return {
        "dataset": splits.name,
        "root": splits.root,
        "train": _pair_stats(splits.train_visible, splits.train_ir),
        "val": _pair_stats(splits.val_visible, splits.val_ir),
        "test": _test_stats(splits.test_query, splits.test_gallery),
        "captions": _caption_stats(splits, text),
        "skipped": {
            "count": len(splits.skipped),
            "examples": [{"path": p, "reason": r} for p, r in splits.skipped[:SKIPPED_EXAMPLES]],
        },
    }


def _pair_stats(visible: Sequence[Sample], ir: Sequence[Sample]) -> dict[str, int]:
    return {
        "visible": len(visible),
        "ir": len(ir),
        "images": len(visible) + len(ir),
        "ids": len({s.pid for s in (*visible, *ir)}),
        "visible_ids": len({s.pid for s in visible}),
        "ir_ids": len({s.pid for s in ir}),
    }


def _test_stats(query: Sequence[Sample], gallery: Sequence[Sample]) -> dict[str, Any]:
    return {
        "query": len(query),
        "gallery": len(gallery),
        "ids": len({s.pid for s in (*query, *gallery)}),
        "query_ids": len({s.pid for s in query}),
        "gallery_ids": len({s.pid for s in gallery}),
        "query_modality": _modality(query),
        "gallery_modality": _modality(gallery),
    }


def _modality(samples: Sequence[Sample]) -> str | None:
    found = sorted({s.modality for s in samples})
    return "+".join(found) if found else None


def _caption_stats(splits: DatasetSplits, text: TextIndex | None) -> dict[str, Any]:
    samples = all_samples(splits)
    found = [(s, text.caption(s)) for s in samples] if text is not None else []
    captioned = [(s, cap) for s, cap in found if cap is not None]
    stats: dict[str, Any] = {
        "images": len(captioned),
        "of_images": len(samples),
        "with_aug": sum(1 for _, cap in captioned if cap.aug_description is not None),
        "unmatched_keys": len(text.unmatched_keys) if text is not None else 0,
    }
    for modality in MODALITIES:
        stats[modality] = sum(1 for s, _ in captioned if s.modality == modality)
        stats[f"{modality}_id_maps"] = len(text.id_maps[modality]) if text is not None else 0
    return stats


def stats_for(name: str, root: str | os.PathLike[str], trial: int = 1) -> dict[str, Any]:
    """Load dataset ``name`` from ``root`` with its text sidecars and return :func:`dataset_stats`."""
    splits = load_dataset(name, root, trial)
    stats = dataset_stats(splits, load_text_for(splits))
    stats["trial"] = trial
    return stats


def format_stats(stats: dict[str, Any]) -> str:
    """A short human-readable table of :func:`dataset_stats` output."""
    tr, va, te, cap = stats["train"], stats["val"], stats["test"], stats["captions"]
    lines = [
        f"dataset {stats['dataset']} at {stats['root']}",
        f"  train  {tr['ids']:>5} ids  {tr['visible']:>6} visible  {tr['ir']:>6} IR",
        f"  val    {va['ids']:>5} ids  {va['visible']:>6} visible  {va['ir']:>6} IR",
        f"  test   {te['ids']:>5} ids  {te['query']:>6} queries ({te['query_modality']})"
        f"  {te['gallery']:>6} gallery candidates ({te['gallery_modality']})",
        f"  captions {cap['images']}/{cap['of_images']} images ({cap['with_aug']} with a rephrasing)",
    ]
    if stats["skipped"]["count"]:
        lines.append(f"  skipped {stats['skipped']['count']} unreadable images (see --json for examples)")
    return "\n".join(lines)
