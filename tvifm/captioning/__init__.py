"""Captioning stage: BLIP captioner fine-tuning and Ray Data batch captioning (DESIGN.md 2.1-2.2).

Modules: :mod:`~tvifm.captioning.config` (``CaptionConfig``), :mod:`~tvifm.captioning.model` (build, load,
save captioners), :mod:`~tvifm.captioning.finetune`, :mod:`~tvifm.captioning.job` (the Ray Data job),
:mod:`~tvifm.captioning.quality` (attribute accuracy on SynthTri) and :mod:`~tvifm.captioning.entry`
(what ``jobs/caption.py`` calls). Ray, transformers and boto3 are imported only when those run.
"""

from tvifm.captioning.config import CaptionConfig, resolve_configs

__all__ = ["CaptionConfig", "resolve_configs"]
