"""The typed configuration of tvifm: one dataclass per concern, one root :class:`Config`.

Every field has a type the loader checks and a default (the tiny CPU preset's value). Closed sets of
choices are ``Literal`` types whose values the error messages list; numeric bounds live in field
metadata (``min``/``max``; ``length`` for fixed-size lists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Stream = Literal["visible", "visible_ca", "ir", "fusion", "visible_text", "ir_text"]


def _num(default: Any, **bounds: Any) -> Any:
    return field(default=default, metadata=bounds)


def _size(height: int, width: int) -> Any:
    return field(default_factory=lambda: [height, width], metadata={"length": 2, "min": 8})


@dataclass
class SynthConfig:
    """SynthTri generation (DESIGN.md section 3)."""

    ids: int = _num(240, min=8)
    seed: int = 0
    image_size: list[int] = _size(96, 48)  # [height, width]


@dataclass
class DataConfig:
    """Which dataset to read and how batches are drawn from it."""

    dataset: Literal["synth", "sysu", "regdb", "llcm"] = "synth"
    root: str = "data/synthtri"
    trial: int = _num(1, min=1, max=10)  # RegDB split
    image_size: list[int] = _size(96, 48)  # [height, width] fed to the model
    ids_per_batch: int = _num(8, min=2)  # P
    images_per_modality: int = _num(4, min=1)  # K visible + K IR per identity
    channel_aug: bool = True
    pad: int = _num(4, min=0)
    flip: bool = True
    num_workers: int = _num(0, min=0)
    val_fraction: float = _num(0.1, min=0.0, max=0.5)  # held-out training ids when no val split exists


@dataclass
class EvalConfig:
    """Evaluation protocols (DESIGN.md section 4)."""

    search: Literal["all", "indoor"] = "all"
    shot: Literal["single", "multi"] = "single"
    trials: int = _num(10, min=1)
    seed: int = 0
    max_rank: int = _num(20, min=1)
    batch_size: int = _num(128, min=1)
    val_trials: int = _num(3, min=1)  # gallery samplings of the validation evaluation


@dataclass
class BackboneConfig:
    """Two-stream ResNet (DESIGN.md 2.4): a stem per modality, shared layer1-4, GeM pooling."""

    arch: Literal["tiny", "resnet18", "resnet50"] = "tiny"
    weights: str | None = None  # local ImageNet weights file (.pth state dict or .safetensors)
    last_stride: int = _num(1, min=1, max=2)
    gem_p: float = _num(3.0, min=1.0)
    tiny_widths: list[int] = field(
        default_factory=lambda: [32, 64, 96, 128], metadata={"length": 4, "min": 4}
    )


@dataclass
class TextConfig:
    """CLIP text tower through open_clip (DESIGN.md 2.3)."""

    arch: Literal["tiny", "RN50"] = "tiny"
    checkpoint: str | None = None  # local open_clip / CLIP checkpoint file; never downloaded
    quick_gelu: bool = False  # True for OpenAI-trained CLIP weights
    context_length: int = _num(77, min=8, max=77)


@dataclass
class LossConfig:
    """Loss weights; each loss is its own module, combined by these weights."""

    ce: float = _num(1.0, min=0.0)
    wrt: float = _num(1.0, min=0.0)
    label_smoothing: float = _num(0.0, min=0.0, max=0.99)


@dataclass
class StageConfig:
    """Optimisation of one training stage (``base`` = stage 1, ``joint`` = stage 2)."""

    epochs: int = _num(30, min=1)
    lr: float = _num(3.5e-4, min=0.0)
    weight_decay: float = _num(5e-4, min=0.0)
    warmup_epochs: int = _num(3, min=0)
    milestones: list[int] = field(default_factory=lambda: [20, 26])
    gamma: float = _num(0.1, min=0.0, max=1.0)
    grad_clip: float = _num(5.0, min=0.0)  # 0 disables clipping
    batches_per_epoch: int = _num(0, min=0)  # 0: visible images / batch size
    eval_every: int = _num(1, min=1)  # validate (and maybe keep the checkpoint) every N epochs
    loss: LossConfig = field(default_factory=LossConfig)
    # feature streams that go through the shared head and the losses
    streams: list[Stream] = field(default_factory=lambda: ["visible", "visible_ca", "ir"])


@dataclass
class JointConfig(StageConfig):
    """Stage 2: joint learning with the frozen backbone."""

    text_aug_prob: float = _num(0.5, min=0.0, max=1.0)  # replace a text by its augmentation
    streams: list[Stream] = field(
        default_factory=lambda: ["visible", "visible_ca", "ir", "fusion", "visible_text"]
    )


@dataclass
class DistConfig:
    """Ray Train + DeepSpeed (``jobs/train.py``)."""

    stages: list[Literal["base", "joint"]] = field(default_factory=lambda: ["base", "joint"])
    num_workers: int = _num(1, min=1)
    use_gpu: bool = False
    cpus_per_worker: int = _num(2, min=1)  # also the torch threads of each worker
    zero_stage: int = _num(2, min=0, max=2)
    max_failures: int = _num(2, min=-1)  # -1: retry forever
    storage_path: str = "runs/ray"  # Ray Train checkpoints and results: local path or s3://bucket/prefix
    run_name: str = ""  # default: <config name>; a re-run with the same name resumes
    ray_address: str = ""  # empty: the RAY_ADDRESS environment variable, else a local Ray


@dataclass
class TrackingConfig:
    """MLflow tracking and model registry."""

    enabled: bool = True
    uri: str = ""  # empty: MLFLOW_TRACKING_URI, else a local server the job starts (runs/mlflow)
    local_root: str = "runs/mlflow"  # SQLite store and artifacts of the embedded server
    experiment: str = "tvifm"
    registered_model: str = "tvifm"
    timeout_s: float = _num(10.0, min=0.1)  # how long to wait for the server before failing


@dataclass
class Config:
    """Root configuration; presets in ``tvifm/config/presets/*.yaml`` override these defaults."""

    name: str = "tiny"
    seed: int = 0
    out_dir: str = "runs"
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    text: TextConfig = field(default_factory=TextConfig)
    base: StageConfig = field(default_factory=StageConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # mixed precision when a GPU is present (ignored on CPU)
