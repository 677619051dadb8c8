"""The typed configuration of tvifm: one dataclass per concern, one root :class:`Config`.

Every field has a type the loader checks and a default (the tiny CPU preset's value). Closed sets of
choices are ``Literal`` types whose values the error messages list; numeric bounds live in field
metadata (``min``/``max``; ``length`` for fixed-size lists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tvifm.errors import ConfigError

ModalityName = Literal["visible", "ir"]
MIB = 1024 * 1024
Stream = Literal["visible", "visible_ca", "ir", "fusion", "visible_text", "ir_text"]


def _num(default: Any, **bounds: Any) -> Any:
    return field(default=default, metadata=bounds)


def _path(default: str | None) -> Any:
    """A local path or ``s3://`` URI; :func:`tvifm.engine.distributed.absolute_paths` makes relative local
    ones absolute before the config reaches processes with another working directory."""
    return field(default=default, metadata={"path": True})


def _size(height: int, width: int) -> Any:
    return field(default_factory=lambda: [height, width], metadata={"length": 2, "min": 8})


@dataclass
class SynthConfig:
    """SynthTri generation (:mod:`tvifm.data.synth`)."""

    ids: int = _num(240, min=8)
    seed: int = 0
    image_size: list[int] = _size(96, 48)  # [height, width]
    # images of every identity in every [visible, IR] camera
    images_per_cam: list[int] = field(default_factory=lambda: [4, 5], metadata={"length": 2, "min": 1})


@dataclass
class DataConfig:
    """Which dataset to read and how batches are drawn from it."""

    dataset: str = "synth"  # a name of the dataset registry (tvifm.data.registry), checked by check()
    root: str = _path("data/synthtri")
    trial: int = _num(1, min=1, max=10)  # RegDB split
    image_size: list[int] = _size(96, 48)  # [height, width] fed to the model
    ids_per_batch: int = _num(8, min=2)  # P
    images_per_modality: int = _num(4, min=1)  # K visible + K IR per identity
    channel_aug: bool = True
    random_erasing: float = _num(0.0, min=0.0, max=1.0)  # probability of a grey patch per training image
    pad: int = _num(4, min=0)
    flip: bool = True
    num_workers: int = _num(0, min=0)
    val_fraction: float = _num(0.1, min=0.0, max=0.5)  # held-out training ids when no val split exists

    def check(self) -> None:
        """Reject a dataset name the registry does not know, listing the valid ones."""
        from tvifm.data.registry import dataset_names  # lazily: the registry imports the loaders

        names = dataset_names()
        if self.dataset not in names:
            raise ConfigError(
                f"data.dataset={self.dataset!r} is not a known dataset; choose one of: {', '.join(names)}"
            )


@dataclass
class EvalConfig:
    """Evaluation protocols (docs/design.md, "Evaluation protocols")."""

    search: Literal["all", "indoor"] = "all"
    shot: Literal["single", "multi"] = "single"
    trials: int = _num(10, min=1)
    seed: int = 0
    max_rank: int = _num(20, min=1)
    batch_size: int = _num(128, min=1)
    val_trials: int = _num(3, min=1)  # gallery samplings of the validation evaluation
    # gallery draws: standard (the published code's, trial t = random.seed(t)), seeded ((seed, trial)), or
    # auto: the dataset's own (standard for SYSU-MM01 and LLCM, seeded for SynthTri); docs/design.md
    sampling: Literal["auto", "standard", "seeded"] = "auto"
    # k-reciprocal re-ranking of every trial's distances (tvifm.eval.rerank; docs/design.md)
    rerank: bool = False
    rerank_k1: int = _num(20, min=1)
    rerank_k2: int = _num(6, min=1)
    rerank_lambda: float = _num(0.3, min=0.0, max=1.0)


@dataclass
class BackboneConfig:
    """Two-stream ResNet (docs/design.md, "The method"): a stem per modality, shared layer1-4, GeM pooling."""

    arch: Literal["tiny", "resnet18", "resnet50"] = "tiny"
    weights: str | None = _path(None)  # local ImageNet weights file (.pth state dict or .safetensors)
    last_stride: int = _num(1, min=1, max=2)
    gem_p: float = _num(3.0, min=1.0)
    tiny_widths: list[int] = field(
        default_factory=lambda: [32, 64, 96, 128], metadata={"length": 4, "min": 4}
    )


@dataclass
class TextConfig:
    """CLIP text tower through open_clip (docs/design.md, "The method")."""

    arch: Literal["tiny", "RN50"] = "tiny"
    checkpoint: str | None = _path(None)  # local open_clip / CLIP checkpoint file; never downloaded
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
    storage_path: str = _path(
        "runs/ray"
    )  # Ray Train checkpoints and results: local path or s3://bucket/prefix
    run_name: str = ""  # default: <config name>; a re-run with the same name resumes
    ray_address: str = ""  # empty: the RAY_ADDRESS environment variable, else a local Ray


@dataclass
class TrackingConfig:
    """MLflow tracking and model registry."""

    enabled: bool = True
    uri: str = ""  # empty: MLFLOW_TRACKING_URI, else a local server the job starts (runs/mlflow)
    local_root: str = _path("runs/mlflow")  # SQLite store and artifacts of the embedded server
    experiment: str = "tvifm"
    registered_model: str = "tvifm"
    timeout_s: float = _num(10.0, min=0.1)  # how long to wait for the server before failing


@dataclass
class CaptionConfig:
    """Captioners (BLIP), their fine-tuning, the Ray Data captioning job and text augmentation."""

    # --- captioner models -------------------------------------------------------------------------
    base_checkpoint: str | None = _path(None)  # local BLIP dir to fine-tune; None: tiny BLIP from scratch
    captioner_dir: str = _path(
        "runs/captioners"
    )  # fine-tuning writes <dir>/rgb and <dir>/ir (local or s3://)
    rgb_checkpoint: str | None = _path(None)  # captioner used by the job for visible images; None: <dir>/rgb
    ir_checkpoint: str | None = _path(None)  # captioner for IR images; None: <captioner_dir>/ir
    image_size: int = _num(64, min=16)  # square side the tiny BLIP sees (checkpoints keep their own)
    patch_size: int = _num(8, min=2)
    vision_width: int = _num(128, min=16)
    vision_layers: int = _num(3, min=1)
    text_width: int = _num(128, min=16)
    text_layers: int = _num(2, min=1)
    heads: int = _num(4, min=1)
    vocab_size: int = _num(400, min=32)  # WordPiece vocabulary trained on the caption corpus
    max_length: int = _num(50, min=8)  # tokens, for training truncation and generate(max_length)
    num_beams: int = _num(1, min=1)
    # --- fine-tuning ------------------------------------------------------------------------------
    steps: int = _num(600, min=1)  # optimiser steps per captioner (ignored when epochs > 0)
    epochs: int = _num(0, min=0)
    batch_size: int = _num(32, min=1)
    lr: float = _num(2e-3, min=0.0)
    weight_decay: float = _num(0.01, min=0.0)
    warmup_fraction: float = _num(0.1, min=0.0, max=1.0)
    flip: bool = True  # horizontal flip augmentation while fine-tuning
    ir_text: Literal["sidecar", "captioner"] = "sidecar"  # IR targets: a paired visible image's sidecar
    # description, or the fine-tuned RGB captioner's caption of it (the paper's recipe); colours stripped
    threads: int = _num(1, min=1)  # torch threads for fine-tuning (2+ only on an otherwise idle machine)
    seed: int = 0
    # --- batch captioning job ---------------------------------------------------------------------
    modalities: list[ModalityName] = field(default_factory=lambda: ["visible", "ir"])
    output: str | None = _path(None)  # Parquet parts + report; None: <root>/Text/captions
    actors: int = _num(2, min=1)  # actor pool size per modality
    cpus_per_actor: float = _num(1.0, min=0.0)
    gpus_per_actor: float = _num(1.0, min=0.0)  # requested only when the cluster has GPUs
    threads_per_actor: int = _num(1, min=1)  # torch threads inside each actor
    infer_batch_size: int = _num(16, min=1)  # images per captioner forward pass
    part_size: int = _num(128, min=1)  # images per actor call and per Parquet part (resume granularity)
    num_cpus: int = _num(2, min=1)  # for the local Ray the job starts when none is running
    filter_ir_colours: bool = True  # strip colour words from IR captions and their rephrasings
    s3_endpoint: str | None = None  # else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
    # --- augmentation -----------------------------------------------------------------------------
    augmenter: Literal["rule", "llm", "none"] = "rule"
    llm_checkpoint: str | None = _path(None)  # local causal LM dir for augmenter=llm
    llm_temperature: float = _num(0.7, min=0.0)
    llm_max_new_tokens: int = _num(60, min=1)
    llm_batch_size: int = _num(8, min=1)
    aug_seed: int = 0


@dataclass
class ScalingConfig:
    """Replicas and resources of one Serve deployment.

    With ``autoscale`` off the deployment runs ``num_replicas`` replicas; with it on, Serve keeps between
    ``min_replicas`` and ``max_replicas``, aiming at ``target_ongoing_requests`` requests per replica.
    """

    num_replicas: int = _num(1, min=1)
    autoscale: bool = False
    min_replicas: int = _num(1, min=0)
    max_replicas: int = _num(4, min=1)
    target_ongoing_requests: float = _num(2.0, min=0.1)
    max_ongoing_requests: int = _num(32, min=1)
    num_cpus: float = _num(1.0, min=0.0)
    num_gpus: float = _num(0.0, min=0.0)


@dataclass
class ServeConfig:
    """The retrieval service: model source, gallery storage, limits, auth, batching and scaling."""

    # --- model --------------------------------------------------------------------------------------
    # a run directory (local or s3://) or an MLflow registry URI models:/<name>@<alias> | models:/<name>/<v>
    model: str = "models:/tvifm@production"
    mlflow_tracking_uri: str | None = None  # else MLFLOW_TRACKING_URI
    ir_captioner: str | None = _path(None)  # BLIP captioner dir (local or s3://) for missing IR captions
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    threads: int = _num(1, min=1)  # torch threads per embedding replica
    # --- gallery --------------------------------------------------------------------------------------
    gallery_uri: str = _path("runs/gallery")  # local folder or s3://bucket/prefix; persisted on every change
    keep_images: bool = True  # store gallery images so a new model can re-embed the gallery
    s3_endpoint: str | None = None  # else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
    max_segments: int = _num(32, min=1)  # compact the gallery's segment log beyond this many segments
    # --- HTTP -----------------------------------------------------------------------------------------
    host: str = "127.0.0.1"  # for jobs/serve.py (a RayService sets its own http_options)
    port: int = _num(8000, min=0, max=65535)
    route_prefix: str = "/"
    # bearer-token auth (off when both are None), read by the ingress replicas themselves, never passed
    # through Ray: a file holding the token (a mounted Kubernetes Secret), else an environment variable
    # already set where the replicas run
    auth_token_file: str | None = _path(None)
    auth_token_env: str | None = None
    # --- limits ---------------------------------------------------------------------------------------
    max_request_bytes: int = _num(32 * MIB, min=1024)  # 413 beyond this
    max_image_bytes: int = _num(8 * MIB, min=64)  # one encoded image; 413 beyond this
    max_image_pixels: int = _num(16_000_000, min=64)  # width x height; 413 beyond this
    # width x height summed over the images of one request (read from their headers, before decoding)
    max_request_pixels: int = _num(32_000_000, min=64)
    max_text_chars: int = _num(2000, min=1)
    max_metadata_bytes: int = _num(4096, min=2)  # one gallery item's metadata as JSON
    max_items_per_request: int = _num(256, min=1)  # POST /v1/gallery
    default_top_k: int = _num(10, min=1)
    max_top_k: int = _num(100, min=1)
    # --- slow and greedy clients (per ingress replica) --------------------------------------------------
    body_timeout_s: float = _num(30.0, min=0.1)  # the whole body must arrive within this; 408 beyond
    # requests with a body (search, gallery add) in progress, reading or being worked on: 503 beyond
    # max_uploads, 429 beyond max_uploads_per_client from one client (its peer address). max_uploads
    # must stay below ingress.max_ongoing_requests, so probes and reads always find a free slot
    max_uploads: int = _num(96, min=1)
    max_uploads_per_client: int = _num(8, min=1)
    # --- batching and scaling -------------------------------------------------------------------------
    max_batch_size: int = _num(16, min=1)  # @serve.batch of image/text encoding and of searches
    batch_wait_timeout_s: float = _num(0.005, min=0.0)
    # the ingress only awaits I/O: many requests per replica, heavy ones bounded by max_uploads
    ingress: ScalingConfig = field(
        default_factory=lambda: ScalingConfig(num_cpus=0.25, max_ongoing_requests=128)
    )
    embedder: ScalingConfig = field(default_factory=ScalingConfig)
    index_num_cpus: float = _num(0.5, min=0.0)  # the single gallery-index replica
    index_threads: int = _num(1, min=1)  # torch threads of the index (exact search)
    index_max_ongoing_requests: int = _num(256, min=1)  # >= max_batch_size so searches can batch
    # --- search index (docs/serving.md, "Scale") ----------------------------------------------------------
    index: Literal["exact", "ivf", "hnsw"] = "exact"  # exact inner product, or a faiss IVF / HNSW index
    index_nlist: int = _num(0, min=0)  # IVF lists; 0: 4 * sqrt(items)
    index_nprobe: int = _num(64, min=1)  # IVF lists searched per query
    index_hnsw_m: int = _num(32, min=4, max=256)  # HNSW links per vector
    index_ef_construction: int = _num(80, min=8)  # HNSW candidate list while building
    index_ef_search: int = _num(512, min=1)  # HNSW candidate list while searching (at least top_k)
    index_min_items: int = _num(20_000, min=1)  # a modality with fewer items is searched exactly
    index_exact_subset_max: int = _num(20_000, min=0)  # filters admitting at most this many: exact
    index_seed: int = 0  # IVF k-means seed (the index is rebuilt deterministically on load)
    # --- re-ranking (docs/serving.md, "Filters, thresholds and re-ranking") ----------------------------
    rerank_candidates: int = _num(100, min=2, max=2000)  # k-reciprocal re-ranking of this many top hits

    def check(self) -> None:
        """Reject combinations of values that are each valid but contradict each other."""
        if self.default_top_k > self.max_top_k:
            raise ConfigError(
                f"serve.default_top_k={self.default_top_k} exceeds serve.max_top_k={self.max_top_k}"
            )
        if self.max_image_bytes > self.max_request_bytes:
            raise ConfigError(
                f"serve.max_image_bytes={self.max_image_bytes} exceeds "
                f"serve.max_request_bytes={self.max_request_bytes}"
            )
        if self.index_nlist and self.index_nprobe > self.index_nlist:
            raise ConfigError(
                f"serve.index_nprobe={self.index_nprobe} exceeds serve.index_nlist={self.index_nlist}"
            )
        self._check_edge_limits()
        for name in ("ingress", "embedder"):
            scaling: ScalingConfig = getattr(self, name)
            if scaling.autoscale and scaling.min_replicas > scaling.max_replicas:
                raise ConfigError(
                    f"serve.{name}.min_replicas={scaling.min_replicas} exceeds "
                    f"serve.{name}.max_replicas={scaling.max_replicas}"
                )

    def _check_edge_limits(self) -> None:
        if self.max_image_pixels > self.max_request_pixels:
            raise ConfigError(
                f"serve.max_image_pixels={self.max_image_pixels} exceeds "
                f"serve.max_request_pixels={self.max_request_pixels}"
            )
        if self.max_uploads_per_client > self.max_uploads:
            raise ConfigError(
                f"serve.max_uploads_per_client={self.max_uploads_per_client} exceeds "
                f"serve.max_uploads={self.max_uploads}"
            )
        if self.max_uploads >= self.ingress.max_ongoing_requests:
            raise ConfigError(
                f"serve.max_uploads={self.max_uploads} must be below "
                f"serve.ingress.max_ongoing_requests={self.ingress.max_ongoing_requests}, so /healthz, "
                "/readyz and reads always find a free slot; raise the latter or lower the former"
            )


@dataclass
class Config:
    """Root configuration; presets in ``tvifm/config/presets/*.yaml`` override these defaults."""

    name: str = "tiny"
    seed: int = 0
    out_dir: str = _path("runs")
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    text: TextConfig = field(default_factory=TextConfig)
    base: StageConfig = field(default_factory=StageConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # mixed precision when a GPU is present (ignored on CPU)

    def gallery_sampling(self) -> str | None:
        """``eval.sampling`` with ``auto`` resolved for ``data.dataset``: ``"standard"`` or ``"seeded"``,
        ``None`` for a dataset without gallery sampling (:func:`tvifm.data.registry.gallery_sampling`)."""
        from tvifm.data.registry import gallery_sampling  # lazily: the registry imports the loaders

        return gallery_sampling(self.data.dataset, self.eval.sampling)
