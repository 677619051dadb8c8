"""The run directory: the one place that knows what a training run writes and how to read it back.

A run directory (docs/design.md, "Run directory") holds::

    config.yaml           the resolved config the run depends on (rebuilds the exact model)
    model.safetensors     weights of the selected (best-on-validation) model
    meta.json             stage, identities, selected epoch, validation metrics, resumes, skipped images
    history.json          one :class:`EpochLog` per epoch (losses, learning rate, validation, time, memory)
    last/                 the latest epoch, for resuming: model.safetensors, trainer.json (epoch,
                          selection state), history.json and the optimiser state of each rank

The trainer writes it, and evaluation, the registry, the pyfunc model, serving and the experiments
read it through :class:`RunDir`; nothing else spells these file names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tvifm import checkpoint as ckpt
from tvifm.config.loader import CONFIG_FILENAME, read_saved_config, save_config
from tvifm.config.schema import Config


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (one entry of ``history.json``)."""
        return asdict(self)


@dataclass(frozen=True)
class RunDir:
    """A training run's directory (it need not exist yet: the trainer creates it)."""

    path: Path

    CONFIG = CONFIG_FILENAME
    WEIGHTS = "model.safetensors"
    META = "meta.json"
    HISTORY = "history.json"
    LAST = "last"
    TRAINER_STATE = "trainer.json"
    REQUIRED = (CONFIG, WEIGHTS, META)  # what a finished run must hold to rebuild its model

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    # -- files ---------------------------------------------------------------------------------------
    @property
    def weights(self) -> Path:
        """The selected model's weights."""
        return self.path / self.WEIGHTS

    @property
    def last(self) -> Path:
        """The latest epoch's resumable state."""
        return self.path / self.LAST

    def missing(self) -> list[str]:
        """The files a finished run must hold that this directory lacks."""
        return [name for name in self.REQUIRED if not (self.path / name).is_file()]

    # -- reading -------------------------------------------------------------------------------------
    def config(self) -> Config:
        """The saved config."""
        return read_saved_config(self.path)

    def meta(self) -> dict[str, Any]:
        """``meta.json``: ``stage``, ``num_classes``, ``best_epoch``, ``best_val``, ``epochs_done``, ..."""
        return ckpt.read_json(self.path / self.META)

    def history(self) -> list[dict[str, Any]]:
        """``history.json``: one dict per epoch done."""
        return ckpt.read_json(self.path / self.HISTORY)

    def last_state(self) -> dict[str, Any] | None:
        """The trainer's resume state (``epoch``, ``best``, ``resumes``), or None before the first epoch."""
        path = self.last / self.TRAINER_STATE
        return ckpt.read_json(path) if path.is_file() else None

    def last_history(self) -> list[dict[str, Any]]:
        """The history as of the latest checkpoint (what a resumed run continues)."""
        return ckpt.read_json(self.last / self.HISTORY)

    def epochs_done(self) -> int:
        """Epochs trained so far (0 for a run that has not finished an epoch)."""
        state = self.last_state()
        return 0 if state is None else int(state["epoch"]) + 1

    def is_finished(self, epochs: int) -> bool:
        """True when ``epochs`` epochs are done and the selected model is written."""
        return self.epochs_done() >= epochs and not self.missing()

    # -- writing (the trainer) -----------------------------------------------------------------------
    def save_config(self, cfg: Config) -> Path:
        """Write the run's config."""
        return save_config(cfg, self.path)

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Write ``meta.json`` atomically."""
        ckpt.write_json(self.path / self.META, meta)

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """Write ``history.json`` atomically."""
        ckpt.write_json(self.path / self.HISTORY, history)
