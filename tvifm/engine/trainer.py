"""The framework-free training loop of both stages.

The loop owns data, epochs, validation, checkpoint selection and resume. The optimisation step is a
:class:`StepRunner`: :class:`PlainRunner` here (optimiser, gradient clipping, mixed precision on GPU);
the distributed driver hands the same loop a DeepSpeed-backed runner instead. Checkpoints are
safetensors + JSON (:mod:`tvifm.engine.checkpoint`), the selected model is the best on the validation
identities (never the test set), and re-running into the same run directory resumes from ``last/``.
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tvifm.config.loader import read_saved_config, save_config, to_dict
from tvifm.config.schema import Config, StageConfig
from tvifm.data.images import SkipReport
from tvifm.data.registry import load_dataset
from tvifm.data.sidecars import load_text_for
from tvifm.data.storage import local_dataset
from tvifm.engine import checkpoint as ckpt
from tvifm.engine.data import TrainSource, build_loader, ensure_validation, train_source
from tvifm.engine.schedule import build_scheduler
from tvifm.engine.validation import ValidationSet, validate
from tvifm.losses import ReIDLoss
from tvifm.models.tvifm import TVIFM

Stage = Literal["base", "joint"]


class StepRunner(Protocol):
    """One optimisation step on a loss; owns the optimiser and saves/restores its state.

    ``module`` is what the loop calls for the forward pass (the model, or an engine wrapping it).
    """

    module: Callable[..., dict[str, torch.Tensor]]

    def step(self, loss: torch.Tensor) -> None: ...
    def lr(self) -> float: ...
    def epoch_end(self) -> None: ...
    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]: ...
    def save_state(self, directory: Path) -> None: ...
    def load_state(self, directory: Path) -> None: ...


class PlainRunner:
    """Adam, per-epoch warm-up + step schedule, gradient clipping, AMP when on CUDA."""

    def __init__(self, model: nn.Module, stage_cfg: StageConfig, device: torch.device, amp: bool) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = torch.optim.Adam(params, lr=stage_cfg.lr, weight_decay=stage_cfg.weight_decay)
        self.scheduler = build_scheduler(
            self.optimizer, stage_cfg.warmup_epochs, stage_cfg.milestones, stage_cfg.gamma
        )
        self.grad_clip = stage_cfg.grad_clip
        self.amp = amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.module = model

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def epoch_end(self) -> None:
        self.scheduler.step()

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        return values

    def save_state(self, directory: Path) -> None:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        ckpt.save_state(state, directory, "runner")

    def load_state(self, directory: Path) -> None:
        state = ckpt.load_state(directory, "runner")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class EpochLog:
    """What one epoch did: mean losses, learning rate, validation metrics, training time (validation
    excluded), images through the backbone and the peak resident memory of this process so far."""

    epoch: int
    losses: dict[str, float]
    lr: float
    seconds: float
    images: int
    val: dict[str, dict[str, float]] | None = None
    best: bool = False
    peak_rss_mb: float = 0.0


@dataclass
class TrainResult:
    """The outcome of :func:`train`."""

    run_dir: Path
    best_epoch: int
    best_val: dict[str, dict[str, float]] | None
    history: list[EpochLog] = field(default_factory=list)


EpochCallback = Callable[[EpochLog], None]
# called on every rank after each epoch's checkpoint is complete in run_dir (e.g. to report it to Ray)
CheckpointSink = Callable[[Path, EpochLog], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def stage_config(cfg: Config, stage: Stage) -> StageConfig:
    """The optimisation settings of ``stage``."""
    return cfg.base if stage == "base" else cfg.joint


def build_model(cfg: Config, num_classes: int, stage: Stage) -> TVIFM:
    """A TVI-FM model with the trainable parameters of ``stage``."""
    torch.manual_seed(cfg.seed)
    model = TVIFM(cfg, num_classes)
    model.set_stage(stage)
    return model


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed every RNG the data path uses, from ``(seed, epoch)`` (so a resumed epoch is identical)."""
    value = seed * 100_003 + epoch
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


class Trainer:
    """Runs one stage into ``run_dir``; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        stage: Stage,
        run_dir: str | Path,
        *,
        init: str | Path | None = None,
        rank: int = 0,
        world_size: int = 1,
        runner_factory: Callable[[nn.Module, StageConfig], StepRunner] | None = None,
        callbacks: Sequence[EpochCallback] = (),
        checkpoint_sink: CheckpointSink | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg, self.stage, self.run_dir = cfg, stage, Path(run_dir)
        self.checkpoint_sink = checkpoint_sink
        self.resumes: list[int] = []
        self.scfg = stage_config(cfg, stage)
        self.rank, self.world_size = rank, world_size
        self.progress = progress and rank == 0
        self.callbacks = list(callbacks)
        self.device = resolve_device(cfg.device)
        self.skipped = SkipReport()
        splits = ensure_validation(
            load_dataset(cfg.data.dataset, local_dataset(cfg.data.root), cfg.data.trial),
            cfg.data.val_fraction,
            cfg.seed,
        )
        text = load_text_for(splits)
        self.source: TrainSource = train_source(splits, text)
        self.val = ValidationSet.from_splits(splits, text, cfg)
        self.model = build_model(cfg, self.source.num_classes, stage).to(self.device)
        if init is not None:
            self._init_from(Path(init))
        self.model.set_stage(stage)
        factory = runner_factory or (lambda m, s: PlainRunner(m, s, self.device, cfg.amp))
        self.runner = factory(self.model, self.scfg)
        self.loss_fn = ReIDLoss(self.scfg.loss)
        self.loader, self.sampler = build_loader(
            cfg,
            self.source,
            text_aug_prob=getattr(self.scfg, "text_aug_prob", 0.0),
            batches_per_epoch=self.scfg.batches_per_epoch,
            rank=rank,
            world_size=world_size,
            skipped=self.skipped,
        )

    def _init_from(self, init: Path) -> None:
        base_cfg = read_saved_config(init)
        for section in ("backbone", "text"):
            if to_dict(getattr(base_cfg, section)) != to_dict(getattr(self.cfg, section)):
                raise ckpt.CheckpointError(
                    f"--init {init}: its {section} config differs from this run's; "
                    f"use the same {section}.* settings as the base run"
                )
        meta = ckpt.read_json(init / ckpt.META_FILE)
        if meta["num_classes"] != self.source.num_classes:
            raise ckpt.CheckpointError(
                f"--init {init} was trained on {meta['num_classes']} identities, this dataset has "
                f"{self.source.num_classes}; initialise from a base run on the same training split"
            )
        ckpt.load_model(self.model, init / ckpt.MODEL_FILE)

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train all remaining epochs; returns the selected epoch and the history."""
        start, best, history = self._resume()
        if self.rank == 0:
            save_config(self.cfg, self.run_dir)
        for epoch in range(start, self.scfg.epochs):
            log = self._epoch(epoch)
            if self._should_validate(epoch):
                log.val = validate(self.model, self.val, self.stage, self.cfg)
                score = self.val.score(log.val, self.stage)
                if best is None or score > best[0]:
                    best = (score, epoch, log.val)
                    log.best = True
            history.append(log)
            self._save(epoch, best, history, log.best)
            if self.checkpoint_sink is not None:
                self.checkpoint_sink(self.run_dir, log)
            for callback in self.callbacks:
                callback(log)
        if best is None:
            if self.rank != 0:  # only rank 0 validates and selects
                return TrainResult(self.run_dir, -1, None, history)
            raise ckpt.CheckpointError(f"{self.run_dir}: no epoch was validated; nothing to select")
        return TrainResult(self.run_dir, best[1], best[2], history)

    def _should_validate(self, epoch: int) -> bool:
        last = epoch == self.scfg.epochs - 1
        return self.rank == 0 and ((epoch + 1) % self.scfg.eval_every == 0 or last)

    def _epoch(self, epoch: int) -> EpochLog:
        seed_epoch(self.cfg.seed, epoch)
        self.sampler.set_epoch(epoch)
        self.model.train()
        totals: dict[str, float] = {}
        steps, images, t0 = 0, 0, time.perf_counter()
        bar = tqdm(
            self.loader, desc=f"{self.stage} epoch {epoch + 1}/{self.scfg.epochs}", disable=not self.progress
        )
        for batch in bar:
            parts = self.train_step(batch)
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v
            steps += 1
            images += 3 * len(batch["label"])
            bar.set_postfix(loss=f"{parts['total']:.3f}")
        lr = self.runner.lr()
        self.runner.epoch_end()
        losses = self.runner.mean_over_ranks({k: v / max(steps, 1) for k, v in totals.items()})
        seconds = time.perf_counter() - t0
        return EpochLog(epoch, losses, lr, seconds, images, peak_rss_mb=peak_rss_mb())

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """Forward, losses, backward and optimiser step on one batch; returns the loss values."""
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        streams = list(self.scfg.streams)
        with torch.autocast(self.device.type, enabled=self.cfg.amp and self.device.type == "cuda"):
            out = self.runner.module(batch, streams)
            labels = batch["label"].repeat(len(streams))
            parts = self.loss_fn(out["features"].float(), out["logits"].float(), labels)
        self.runner.step(parts["total"])
        return {k: float(v.detach()) for k, v in parts.items()}

    # -- checkpoints --------------------------------------------------------------------------------
    def _save(self, epoch: int, best: tuple | None, history: list[EpochLog], is_best: bool) -> None:
        """Write this epoch's state: ``last/`` on every rank (runner state may be sharded), the run
        files (selected model, meta, history) on rank 0."""
        tmp = self.run_dir / (ckpt.LAST_DIR + ".tmp")
        history_json = [log.__dict__ for log in history]
        if self.rank == 0:
            if is_best:
                ckpt.save_model(self.model, self.run_dir / ckpt.MODEL_FILE)
            ckpt.save_model(self.model, tmp / ckpt.MODEL_FILE)
            ckpt.write_json(
                tmp / "trainer.json", {"epoch": epoch, "best": _best_json(best), "resumes": self.resumes}
            )
            ckpt.write_json(tmp / "history.json", history_json)
        tmp.mkdir(parents=True, exist_ok=True)
        self.runner.save_state(tmp)
        ckpt.replace_dir(tmp, self.run_dir / ckpt.LAST_DIR)
        if self.rank == 0:
            ckpt.write_json(self.run_dir / ckpt.META_FILE, self._meta(epoch, best))
            ckpt.write_json(self.run_dir / "history.json", history_json)

    def _meta(self, epoch: int, best: tuple | None) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "dataset": self.cfg.data.dataset,
            "num_classes": self.source.num_classes,
            "labels": {str(k): v for k, v in self.source.labels.items()},
            "best_epoch": best[1] if best else None,
            "best_val": best[2] if best else None,
            "epochs_done": epoch + 1,
            "world_size": self.world_size,
            "resumes": self.resumes,  # epochs at which training resumed from a checkpoint
            "skipped_images": self.skipped.to_dict(),
        }

    def _resume(self) -> tuple[int, tuple | None, list[EpochLog]]:
        last = self.run_dir / ckpt.LAST_DIR
        if not (last / "trainer.json").is_file():
            return 0, None, []
        saved = read_saved_config(self.run_dir)
        if stage_settings(saved, self.stage) != stage_settings(self.cfg, self.stage):
            raise ckpt.CheckpointError(
                f"{self.run_dir} holds a run with a different config; resume with the same config "
                "or choose a new --out directory"
            )
        ckpt.load_model(self.model, last / ckpt.MODEL_FILE)
        self.runner.load_state(last)
        state = ckpt.read_json(last / "trainer.json")
        history = [EpochLog(**h) for h in ckpt.read_json(last / "history.json")]
        best = state["best"]
        best_t = (tuple(best["score"]), best["epoch"], best["val"]) if best else None
        self.resumes = [*state.get("resumes", []), state["epoch"] + 1]
        return state["epoch"] + 1, best_t, history


def stage_settings(cfg: Config, stage: str) -> dict[str, Any]:
    """The settings a ``stage`` run depends on: the whole config but the other stage's section, so a
    finished stage-1 run is reused when only ``joint.*`` changed (and a stage-2 run when ``base.*``)."""
    other = "joint" if stage == "base" else "base"
    return {key: value for key, value in to_dict(cfg).items() if key != other}


def _best_json(best: tuple | None) -> dict[str, Any] | None:
    if best is None:
        return None
    return {"score": list(best[0]), "epoch": best[1], "val": best[2]}


def train(
    cfg: Config,
    stage: Stage,
    run_dir: str | Path,
    *,
    init: str | Path | None = None,
    callbacks: Sequence[EpochCallback] = (),
    progress: bool = True,
) -> TrainResult:
    """Train ``stage`` on one machine into ``run_dir`` (resuming when it holds an unfinished run)."""
    return Trainer(cfg, stage, run_dir, init=init, callbacks=callbacks, progress=progress).fit()
