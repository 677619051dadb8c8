"""BNNeck and identity classifier, and the semantic filtered fusion (docs/design.md,
"The method")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BNNeckHead(nn.Module):
    """A BatchNorm "neck" (bias frozen at zero) followed by a bias-free linear identity classifier.

    ``forward(features)`` returns ``(bn_features, logits)``; the BN-ed features are what retrieval uses.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn(features)
        return bn, self.classifier(bn)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Retrieval embedding: BN-ed (with running statistics in eval mode) and L2-normalised."""
        return F.normalize(self.bn(features), dim=-1)


def semantic_filtered_fusion(
    ir_image: torch.Tensor, visible_text: torch.Tensor, ir_text: torch.Tensor
) -> torch.Tensor:
    """``f_F = f_ir_img + (f_rgb_txt - f_ir_txt)``: add only what the IR caption does not already say.

    No learned parameters: the IR caption's feature acts as a filter on the visible-side description.
    """
    return ir_image + (visible_text - ir_text)
