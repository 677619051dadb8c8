"""Entry points of the captioning stage: resolve the config of a preset plus overrides, run the stage.

``jobs/caption.py`` calls these (and nothing else): :func:`caption_dataset` for the Ray Data captioning
job, :func:`finetune_captioners` for captioner fine-tuning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tvifm.captioning.config import resolve_configs


def caption_dataset(root: str, preset: str = "tiny", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Caption the dataset at ``root`` (local or ``s3://``); returns the job report as a dict."""
    from tvifm.captioning.job import run_caption_job

    cfg, ccfg = resolve_configs(preset, overrides)
    return run_caption_job(root, ccfg, dataset=cfg.data.dataset).to_dict()


def finetune_captioners(
    root: str,
    preset: str = "tiny",
    overrides: Sequence[str] = (),
    modalities: Sequence[str] = ("visible", "ir"),
) -> list[dict[str, Any]]:
    """Fine-tune the RGB and/or IR captioner on the dataset at ``root``; returns one summary per captioner."""
    from tvifm.captioning.finetune import finetune

    cfg, ccfg = resolve_configs(preset, overrides)
    results = finetune(root, cfg, ccfg, modalities)
    return [
        {
            "modality": r.modality,
            "directory": r.directory,
            "pairs": r.pairs,
            "steps": r.steps,
            "final_loss": round(r.final_loss, 4),
            "seconds": round(r.seconds, 1),
            "skipped": r.skipped.to_dict(),
        }
        for r in results
    ]
