"""Weighted regularised triplet (WRT) loss.

For each anchor, positives (same identity, the anchor itself excluded) are averaged with softmax
weights over their distances (the farther, the heavier) and negatives with softmax weights over the
negated distances (the closer, the heavier); the loss is the soft margin
``log(1 + exp(d_pos - d_neg))``, averaged over anchors. No margin hyper-parameter. Anchors with no
positive or no negative in the batch are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _masked_softmax_weights(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    masked = values.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(masked, dim=1)
    return torch.nan_to_num(weights, nan=0.0)


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of ``x``, with a stable gradient at zero distance."""
    sq = (x * x).sum(dim=1, keepdim=True)
    d2 = (sq + sq.t() - 2.0 * x @ x.t()).clamp(min=1e-12)
    return d2.sqrt()


class WeightedRegularizedTriplet(nn.Module):
    """WRT loss of ``features (B, D)`` with identity ``labels (B,)``."""

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        dist = pairwise_euclidean(features.float())
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos, neg = same & ~eye, ~same
        valid = pos.any(dim=1) & neg.any(dim=1)
        if not valid.any():
            return features.sum() * 0.0
        d_pos = (dist * _masked_softmax_weights(dist, pos)).sum(dim=1)
        d_neg = (dist * _masked_softmax_weights(-dist, neg)).sum(dim=1)
        return F.softplus(d_pos - d_neg)[valid].mean()
