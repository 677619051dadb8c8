"""The framework-free training loop of both stages.

The loop owns data, epochs, validation, checkpoint selection and resume. The optimisation step is a
:class:`StepRunner`: :class:`PlainRunner` here (optimiser, gradient clipping, mixed precision on GPU);
the distributed driver hands the same loop a DeepSpeed-backed runner instead. Checkpoints are
safetensors + JSON (:mod:`tvifm.checkpoint`), the selected model is the best on the validation
identities (never the test set), and re-running into the same run directory resumes from ``last/``.
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tvifm import checkpoint as ckpt
from tvifm.config.loader import run_settings, to_dict
from tvifm.config.schema import Config, StageConfig
from tvifm.data.base import DatasetSplits
from tvifm.data.images import SkipReport
from tvifm.data.registry import load_dataset
from tvifm.data.sidecars import TextIndex, load_text_for
from tvifm.data.storage import local_dataset
from tvifm.engine.data import TrainSource, build_loader, ensure_validation, train_source
from tvifm.engine.schedule import build_scheduler
from tvifm.eval.evaluator import Evaluator, ValidationSet
from tvifm.losses import ReIDLoss
from tvifm.models.factory import create_model, resolve_device
from tvifm.models.run import EpochLog, RunDir
from tvifm.models.tvifm import TVIFM, Stage


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
class TrainResult:
    """The outcome of :func:`train`."""

    run_dir: Path
    best_epoch: int
    best_val: dict[str, dict[str, float]] | None
    history: list[EpochLog] = field(default_factory=list)


EpochCallback = Callable[[EpochLog], None]
# called on every rank after each epoch's checkpoint is complete in run_dir (e.g. to report it to Ray)
CheckpointSink = Callable[[Path, EpochLog], None]


def stage_config(cfg: Config, stage: Stage) -> StageConfig:
    """The optimisation settings of ``stage``."""
    return cfg.base if stage == "base" else cfg.joint


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed every RNG the data path uses, from ``(seed, epoch)`` (so a resumed epoch is identical)."""
    value = seed * 100_003 + epoch
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


class Trainer:
    """Runs one stage into ``run_dir``; see the module docstring.

    ``splits``, ``model``, ``loss`` and ``evaluator`` replace the parts the trainer would build
    (:meth:`build_splits`, :meth:`build_model`, :meth:`build_loss`, :meth:`build_evaluator`).
    """

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
        splits: DatasetSplits | None = None,
        model: TVIFM | None = None,
        loss: nn.Module | None = None,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.cfg, self.stage, self.run = cfg, stage, RunDir(run_dir)
        self.run_dir = self.run.path
        self.checkpoint_sink = checkpoint_sink
        self.resumes: list[int] = []
        self.scfg = stage_config(cfg, stage)
        self.rank, self.world_size = rank, world_size
        self.progress = progress and rank == 0
        self.callbacks = list(callbacks)
        self.device = resolve_device(cfg.device)
        self.skipped = SkipReport()
        self.splits = splits if splits is not None else self.build_splits()
        text = load_text_for(self.splits)
        self.source: TrainSource = train_source(self.splits, text)
        self.evaluator = evaluator if evaluator is not None else self.build_evaluator(self.splits, text)
        self.model = (model if model is not None else self.build_model(self.source.num_classes)).to(
            self.device
        )
        if init is not None:
            self._init_from(Path(init))
        self.model.set_stage(stage)
        factory = runner_factory or (lambda m, s: PlainRunner(m, s, self.device, cfg.amp))
        self.runner = factory(self.model, self.scfg)
        self.loss_fn = loss if loss is not None else self.build_loss()
        self.loader, self.sampler = build_loader(
            cfg,
            self.source,
            text_aug_prob=getattr(self.scfg, "text_aug_prob", 0.0),
            batches_per_epoch=self.scfg.batches_per_epoch,
            rank=rank,
            world_size=world_size,
            skipped=self.skipped,
        )

    # -- parts (override in a subclass, or pass them to the constructor) ------------------------------
    def build_splits(self) -> DatasetSplits:
        """The configured dataset, with validation identities held out when it has none of its own."""
        d = self.cfg.data
        splits = load_dataset(d.dataset, local_dataset(d.root), d.trial)
        return ensure_validation(splits, d.val_fraction, self.cfg.seed)

    def build_model(self, num_classes: int) -> TVIFM:
        """A new model for ``num_classes`` training identities, seeded by ``cfg.seed``."""
        cfg = self.cfg
        return create_model(cfg.backbone, cfg.text, num_classes, stage=self.stage, seed=cfg.seed)

    def build_loss(self) -> nn.Module:
        """The stage's identity + triplet loss, weighted by its ``loss`` settings."""
        return ReIDLoss(self.scfg.loss)

    def build_evaluator(self, splits: DatasetSplits, text: TextIndex | None) -> Evaluator:
        """Checkpoint selection on the validation identities (never the test set)."""
        return ValidationSet.from_splits(splits, text, self.cfg)

    def _init_from(self, init: Path) -> None:
        base = RunDir(init)
        base_cfg = base.config()
        for section in ("backbone", "text"):
            if to_dict(getattr(base_cfg, section)) != to_dict(getattr(self.cfg, section)):
                raise ckpt.CheckpointError(
                    f"--init {init}: its {section} config differs from this run's; "
                    f"use the same {section}.* settings as the base run"
                )
        meta = base.meta()
        if meta["num_classes"] != self.source.num_classes:
            raise ckpt.CheckpointError(
                f"--init {init} was trained on {meta['num_classes']} identities, this dataset has "
                f"{self.source.num_classes}; initialise from a base run on the same training split"
            )
        ckpt.load_weights(self.model, base.weights)

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train all remaining epochs; returns the selected epoch and the history."""
        start, best, history = self._resume()
        if self.rank == 0:
            self.run.save_config(self.cfg)
        for epoch in range(start, self.scfg.epochs):
            log = self._epoch(epoch)
            if self._should_validate(epoch):
                log.val = self.evaluator.evaluate(self.model, self.stage)
                score = self.evaluator.score(log.val)
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
        run = self.run
        tmp = RunDir(run.path / (run.LAST + ".tmp"))
        history_json = [log.to_dict() for log in history]
        if self.rank == 0:
            if is_best:
                ckpt.save_weights(self.model, run.weights)
            ckpt.save_weights(self.model, tmp.weights)
            state = {"epoch": epoch, "best": _best_json(best), "resumes": self.resumes}
            ckpt.write_json(tmp.path / run.TRAINER_STATE, state)
            tmp.write_history(history_json)
        tmp.path.mkdir(parents=True, exist_ok=True)
        self.runner.save_state(tmp.path)
        ckpt.replace_dir(tmp.path, run.last)
        if self.rank == 0:
            run.write_meta(self._meta(epoch, best))
            run.write_history(history_json)

    def _check_same_run(self, saved: Config) -> None:
        """Refuse to resume a run whose settings differ, naming the first differing keys."""
        old, new = run_settings(saved, self.stage), run_settings(self.cfg, self.stage)
        if old != new:
            keys = ", ".join(_differences(old, new)[:5])
            raise ckpt.CheckpointError(
                f"{self.run_dir} holds a run with a different config ({keys} differ); resume with the "
                "same data, model and stage settings, or choose a new output directory"
            )

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
        state = self.run.last_state()
        if state is None:
            return 0, None, []
        self._check_same_run(self.run.config())
        ckpt.load_weights(self.model, self.run.last / RunDir.WEIGHTS)
        self.runner.load_state(self.run.last)
        history = [EpochLog(**h) for h in self.run.last_history()]
        best = state["best"]
        best_t = (tuple(best["score"]), best["epoch"], best["val"]) if best else None
        self.resumes = [*state.get("resumes", []), state["epoch"] + 1]
        return state["epoch"] + 1, best_t, history


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


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
