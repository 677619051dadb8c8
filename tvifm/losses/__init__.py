"""Losses: identity cross-entropy and weighted regularised triplet, combined by config weights."""

from __future__ import annotations

import torch
from torch import nn

from tvifm.config.schema import LossConfig
from tvifm.losses.ce import IdentityCE
from tvifm.losses.wrt import WeightedRegularizedTriplet, pairwise_euclidean


class ReIDLoss(nn.Module):
    """``ce * CE(logits) + wrt * WRT(features)`` with the weights of a :class:`LossConfig`.

    ``forward`` returns every component (unweighted) and ``total`` (weighted sum), so each can be logged.
    """

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.weights = {"ce": cfg.ce, "wrt": cfg.wrt}
        self.ce = IdentityCE(cfg.label_smoothing)
        self.wrt = WeightedRegularizedTriplet()

    def forward(
        self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        parts = {"ce": self.ce(logits, labels), "wrt": self.wrt(features, labels)}
        parts["total"] = sum(self.weights[k] * v for k, v in parts.items())
        return parts


__all__ = ["IdentityCE", "ReIDLoss", "WeightedRegularizedTriplet", "pairwise_euclidean"]
