"""Ray Train + DeepSpeed driver for both training stages (``jobs/train.py``).

The driver runs a Ray Train ``TorchTrainer`` (the V2 API) per stage. Each worker builds the same
framework-free :class:`~tvifm.engine.trainer.Trainer` as a single-machine run, but hands it a
:class:`DeepSpeedRunner` (``deepspeed.initialize`` with the configured ZeRO stage; gloo and fp32 on
CPU, NCCL and bf16 on GPU) and its rank, so the PK sampler gives every rank a disjoint share of each
global batch. After every epoch each worker reports its part of the run directory to Ray Train
(rank 0: model, selected model, metadata and history; every rank: its DeepSpeed shard), which merges
them into one checkpoint in ``dist.storage_path`` (local or ``s3://``). A worker that dies is replaced
and resumes from the latest checkpoint (``FailureConfig(max_failures)``); a driver re-run with the same
``dist.run_name`` finds the same checkpoints and resumes too.

Ray and DeepSpeed are imported only here (and only inside functions).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tvifm.checkpoint import CheckpointError
from tvifm.config.loader import from_dict, to_dict
from tvifm.config.schema import Config, StageConfig
from tvifm.data import storage
from tvifm.engine.schedule import lr_factor
from tvifm.engine.trainer import EpochCallback, Stage, Trainer
from tvifm.errors import TvifmError
from tvifm.models.run import EpochLog, RunDir

RUN_SUBDIR = "run"  # the run directory inside each Ray Train checkpoint
EXPORT_SUBDIR = "export"  # the finished run directory, next to a stage's checkpoints
DEEPSPEED_SUBDIR = "deepspeed"  # each rank's DeepSpeed state inside the run directory's last/
# what torch's weights-only unpickler names when it refuses a file ("Unsupported global: GLOBAL io.open")
_REFUSED_GLOBAL = re.compile(r"WeightsUnpickler error: (.+?)(?: was not an allowed global|\. Please|$)", re.M)


class DeepSpeedRunner:
    """The optimisation step on a DeepSpeed engine (same Adam, schedule and clipping as PlainRunner).

    The learning-rate schedule is per epoch, applied to the optimiser's groups at every epoch end.
    """

    def __init__(
        self,
        model: nn.Module,
        scfg: StageConfig,
        *,
        zero_stage: int,
        micro_batch: int,
        world_size: int,
        bf16: bool,
    ) -> None:
        import deepspeed

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=scfg.lr, weight_decay=scfg.weight_decay)
        ds_config = {
            "train_micro_batch_size_per_gpu": micro_batch,
            "train_batch_size": micro_batch * world_size,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": scfg.grad_clip,
            "zero_optimization": {"stage": zero_stage},
            "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": bf16},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config, dist_init_required=False
        )
        _load_tensors_only(self.engine)
        self.module = self.engine
        self.scfg = scfg
        self.base_lr = scfg.lr
        self.epoch = 0
        self._apply_lr()

    def _apply_lr(self) -> None:
        factor = lr_factor(self.epoch, self.scfg.warmup_epochs, self.scfg.milestones, self.scfg.gamma)
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * factor

    def step(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def epoch_end(self) -> None:
        self.epoch += 1
        self._apply_lr()

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_world_size() == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {k: float(v) / dist.get_world_size() for k, v in zip(keys, t.tolist(), strict=True)}

    def save_state(self, directory: Path) -> None:
        self.engine.save_checkpoint(
            str(directory / DEEPSPEED_SUBDIR), tag="last", client_state={"epoch": self.epoch}
        )

    def load_state(self, directory: Path) -> None:
        """Restore this rank's DeepSpeed state; every file is read with :func:`load_tensors` (no pickles)."""
        _, client = self.engine.load_checkpoint(str(directory / DEEPSPEED_SUBDIR), tag="last")
        if client is None:
            raise TvifmError(f"{directory}: no DeepSpeed state to resume from")
        self.epoch = int(client["epoch"])
        self._apply_lr()


def _deepspeed_record_types() -> list[type]:
    """The plain record classes DeepSpeed 0.19 pickles into its ZeRO optimiser files, besides tensors and
    containers: loss-scaler settings, the ZeRO stage and parameter-fragment offsets. Each only stores the
    values it is given; none runs code when rebuilt."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def load_tensors(path: str | os.PathLike[str], map_location: Any = None) -> Any:
    """Read one DeepSpeed checkpoint file with torch's weights-only unpickler: tensors, containers,
    numbers, strings and :func:`_deepspeed_record_types` only. Anything else (a pickle that would import
    or call other code) raises :class:`~tvifm.checkpoint.CheckpointError` before any of it runs."""
    import pickle

    try:
        with torch.serialization.safe_globals(_deepspeed_record_types()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = _REFUSED_GLOBAL.search(str(err))
        reason = (found[1] if found else str(err).strip().splitlines()[0])[:300]
        raise CheckpointError(
            f"{path} was not loaded: it holds Python objects other than tensors and DeepSpeed's plain "
            f"checkpoint records ({reason}), so it may have been tampered with. Restore it from a trusted "
            "copy, or remove the stage's checkpoints to train it from the start"
        ) from err


def _load_tensors_only(engine: Any) -> None:
    """Make ``engine`` read its checkpoints with :func:`load_tensors` instead of DeepSpeed's
    ``torch.load(weights_only=False)``; saving is unchanged."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    checkpoint_engine = engine.checkpoint_engine
    if type(checkpoint_engine) is not TorchCheckpointEngine:  # every load must go through load_tensors
        raise TvifmError(
            f"DeepSpeed chose the checkpoint engine {type(checkpoint_engine).__name__}; tvifm resumes only "
            "through TorchCheckpointEngine, whose reads it restricts to tensors"
        )
    checkpoint_engine.load = load_tensors


@dataclass
class StageOutcome:
    """What one distributed stage produced: the exported run directory and the selected validation."""

    stage: Stage
    run_uri: str
    best_epoch: int | None
    best_val: dict[str, Any] | None


def _local_run(uri: str | None) -> Path | None:
    """A local copy of an exported run directory (``s3://`` is downloaded), or None."""
    if not uri:
        return None
    if not storage.is_s3(uri):
        return Path(uri)
    dest = Path(tempfile.mkdtemp(prefix="tvifm-init-"))
    storage.download_tree(uri, dest)
    return dest


def _restore_into(run_dir: Path) -> bool:
    """Copy the latest Ray Train checkpoint (if any) into ``run_dir``; True when one was found."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as d:
        shutil.copytree(Path(d) / RUN_SUBDIR, run_dir, dirs_exist_ok=True)
    return True


def _is_metric(key: str, value: Any) -> bool:
    return isinstance(value, float) and not key.endswith("_std")


def _report_sink(rank: int) -> Callable[[Path, EpochLog], None]:
    import ray.train

    def report(run_dir: Path, log: EpochLog) -> None:
        metrics: dict[str, Any] = {
            "epoch": log.epoch,
            "lr": log.lr,
            **{f"loss/{k}": v for k, v in log.losses.items()},
        }
        for mode, values in (log.val or {}).items():
            metrics.update({f"val/{mode}/{k}": v for k, v in values.items() if _is_metric(k, v)})
        with tempfile.TemporaryDirectory(prefix="tvifm-ckpt-") as tmp:
            target = Path(tmp) / RUN_SUBDIR
            if rank == 0:
                shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("*.tmp", "*.old"))
            else:
                shards = Path(RunDir.LAST, DEEPSPEED_SUBDIR)
                shutil.copytree(run_dir / shards, target / shards)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    return report


def train_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker loop: one stage of the framework-free Trainer on a DeepSpeed runner."""
    import ray.train

    cfg: Config = from_dict(Config, config["cfg"])
    stage: Stage = config["stage"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.dist.cpus_per_worker)
    run_dir = Path(tempfile.mkdtemp(prefix=f"tvifm-{stage}-r{rank}-"))
    _restore_into(run_dir)
    init = _local_run(config.get("init_uri"))
    use_gpu = cfg.dist.use_gpu and torch.cuda.is_available()
    micro = cfg.data.ids_per_batch // world * cfg.data.images_per_modality

    def runner(model: nn.Module, scfg: StageConfig) -> DeepSpeedRunner:
        return DeepSpeedRunner(
            model, scfg, zero_stage=cfg.dist.zero_stage, micro_batch=micro, world_size=world, bf16=use_gpu
        )

    callbacks: list[EpochCallback] = list(config.get("callbacks", ()))
    trainer = Trainer(
        cfg,
        stage,
        run_dir,
        init=init,
        rank=rank,
        world_size=world,
        runner_factory=runner,
        callbacks=callbacks if rank == 0 else (),
        checkpoint_sink=_report_sink(rank),
        progress=rank == 0,
    )
    trainer.fit()
    shutil.rmtree(run_dir, ignore_errors=True)


def _run_config(cfg: Config, name: str) -> Any:
    import ray.train

    fs, path = storage.arrow_filesystem(cfg.dist.storage_path)
    return ray.train.RunConfig(
        name=name,
        storage_path=path,
        storage_filesystem=fs,
        failure_config=ray.train.FailureConfig(max_failures=cfg.dist.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
    )


def absolute_paths(cfg: Config) -> Config:
    """A copy of ``cfg`` whose relative local paths (every field the schema declares a path: dataset,
    weights, checkpoints, Ray storage, ...) are made absolute against this process's working directory:
    Ray Train runs each worker in a directory of its own, where a relative path such as the default
    ``data/synthtri`` would not resolve."""
    out = copy.deepcopy(cfg)
    _absolute_in(out)
    return out


def _absolute_in(section: Any) -> None:
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _absolute_in(value)
        elif f.metadata.get("path") and value and not storage.is_s3(value) and not os.path.isabs(value):
            setattr(section, f.name, os.path.abspath(value))


def stage_name(cfg: Config, stage: str) -> str:
    """The Ray Train run name of ``stage``: ``<dist.run_name or config name>-<stage>``."""
    return f"{cfg.dist.run_name or cfg.name}-{stage}"


def export_uri(cfg: Config, stage: str) -> str:
    """Where ``stage``'s finished run directory is exported (local path or ``s3://``)."""
    return storage.join(cfg.dist.storage_path, stage_name(cfg, stage), EXPORT_SUBDIR)


def run_stage(
    cfg: Config, stage: Stage, *, init_uri: str | None = None, callbacks: list[EpochCallback] | None = None
) -> StageOutcome:
    """Train one stage with Ray Train + DeepSpeed and export its run directory next to the checkpoints.

    The exported run directory (:func:`export_uri`: a :class:`~tvifm.models.run.RunDir` without its
    ``last/``) is what evaluation, the registry and serving read.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = absolute_paths(cfg)
    if init_uri and not storage.is_s3(init_uri):
        init_uri = os.path.abspath(init_uri)
    name = stage_name(cfg, stage)
    use_gpu = cfg.dist.use_gpu
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "cfg": to_dict(cfg),
            "stage": stage,
            "init_uri": init_uri,
            "callbacks": callbacks or [],
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.dist.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cfg.dist.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=_run_config(cfg, name),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise TvifmError(f"stage {stage}: training reported no checkpoint; see the Ray logs above")
    export = export_uri(cfg, stage)
    with result.checkpoint.as_directory() as d:
        run = Path(d) / RUN_SUBDIR
        for f in (p for p in run.iterdir() if p.is_file()):
            storage.write_bytes(storage.join(export, f.name), f.read_bytes())
    meta = json.loads(storage.read_bytes(storage.join(export, RunDir.META)))
    return StageOutcome(stage, export, meta.get("best_epoch"), meta.get("best_val"))
