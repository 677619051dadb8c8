"""Identity cross-entropy on classifier logits, with optional label smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IdentityCE(nn.Module):
    """Mean cross-entropy of ``logits (B, C)`` against identity ``labels (B,)``."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing} must lie in [0, 1)")
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
