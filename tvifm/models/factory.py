"""The public ways to get a TVI-FM model: :func:`create_model` (new, for training) and
:func:`load_model` (ready for inference, from a run directory, ``s3://`` or a ``models:/`` URI).

Loading imports neither the trainer nor DeepSpeed nor Ray: serving, the MLflow pyfunc model and
offline evaluation build their models here (docs/design.md, "Layers").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tvifm import checkpoint as ckpt
from tvifm.config.loader import config_hash
from tvifm.config.schema import BackboneConfig, Config, TextConfig
from tvifm.models.query import STAGE_MODES
from tvifm.models.run import RunDir
from tvifm.models.source import ModelInfo, ModelRef, ResolvedModel, resolve_model, weights_digest
from tvifm.models.tvifm import TVIFM, Stage


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without CUDA falls back to CPU."""
    if name == "auto" or (name == "cuda" and not torch.cuda.is_available()):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def create_model(
    backbone: BackboneConfig,
    text: TextConfig,
    num_classes: int,
    *,
    stage: Stage = "base",
    seed: int | None = None,
) -> TVIFM:
    """A new model with the trainable parameters of ``stage`` (weights drawn after ``seed``, if given)."""
    if seed is not None:
        torch.manual_seed(seed)
    model = TVIFM(backbone, text, num_classes)
    model.set_stage(stage)
    return model


@dataclass
class LoadedModel:
    """A model ready for inference with what it came from."""

    model: TVIFM
    config: Config
    meta: dict[str, Any]
    run: RunDir
    info: ModelInfo

    @property
    def modes(self) -> tuple[str, ...]:
        """The query modes this model answers (a stage-1 model has no trained text tower)."""
        return STAGE_MODES[str(self.meta["stage"])]


def load_run(run_dir: str | Path, device: str = "cpu") -> LoadedModel:
    """Rebuild the exact model of a local run directory from its saved config and weights."""
    return _load(ResolvedModel(Path(run_dir), ModelRef(str(run_dir)), None, None), device)


def load_model(
    source: str | Path,
    *,
    device: str = "cpu",
    tracking_uri: str | None = None,
    endpoint: str | None = None,
) -> LoadedModel:
    """Resolve ``source`` (a run directory, ``s3://`` URI or ``models:/<name>@<alias>|/<version>``) and
    build its model in eval mode on ``device``."""
    return _load(resolve_model(str(source), tracking_uri, endpoint), device)


def _load(resolved: ResolvedModel, device: str) -> LoadedModel:
    run = RunDir(resolved.run_dir)
    cfg, meta = run.config(), run.meta()
    model = TVIFM(cfg.backbone, cfg.text, int(meta["num_classes"]))
    ckpt.load_weights(model, run.weights)
    model.set_stage(meta["stage"])
    model.to(resolve_device(device)).eval()
    chash = config_hash(cfg)
    info = ModelInfo(
        source=resolved.ref.source,
        name=resolved.ref.name,
        version=resolved.version,
        alias=resolved.alias,
        config_hash=chash,
        fingerprint=f"{chash}-{weights_digest(run.path)}",
        stage=str(meta["stage"]),
        dim=int(model.dim),
        image_size=list(cfg.data.image_size),
    )
    return LoadedModel(model, cfg, meta, run, info)
