"""Learning-rate schedule: linear warm-up, then step decay at milestone epochs."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def lr_factor(epoch: int, warmup_epochs: int, milestones: Sequence[int], gamma: float) -> float:
    """Multiplier of the base lr during ``epoch`` (0-based).

    Warm-up rises linearly from ``1/(warmup+1)`` to 1 over ``warmup_epochs``; afterwards the factor is
    ``gamma ** (number of milestones <= epoch)``.
    """
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    return gamma ** sum(1 for m in milestones if epoch >= m)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_epochs: int, milestones: Sequence[int], gamma: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch ``LambdaLR`` following :func:`lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: lr_factor(e, warmup_epochs, list(milestones), gamma)
    )
