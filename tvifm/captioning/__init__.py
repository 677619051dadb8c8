"""Captioning stage: BLIP captioner fine-tuning and Ray Data batch captioning (docs/design.md, "The
method").

Modules: :mod:`~tvifm.captioning.config` (``CaptionConfig``), :mod:`~tvifm.captioning.model` (build, load,
save captioners), :mod:`~tvifm.captioning.finetune`, :mod:`~tvifm.captioning.job` (the Ray Data job) and
:mod:`~tvifm.captioning.quality` (attribute accuracy on SynthTri); ``tvifm caption`` and
``tvifm caption-finetune`` (:mod:`tvifm.cli`) run them. Ray, transformers and boto3 are imported only when
those run.
"""

from tvifm.captioning.config import CaptionConfig, caption_config

__all__ = ["CaptionConfig", "caption_config"]
