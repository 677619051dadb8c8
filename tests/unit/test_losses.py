"""Each loss against values worked out by hand, and their combination by config weights."""

from __future__ import annotations

import math

import pytest
import torch

from tvifm.config.schema import LossConfig
from tvifm.losses import IdentityCE, ReIDLoss, WeightedRegularizedTriplet, pairwise_euclidean


def test_identity_ce_matches_hand_computation() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    # row 0: -log(e^2 / (e^2 + 1)); row 1: -log(1/2)
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert IdentityCE()(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_moves_mass_to_other_classes() -> None:
    logits = torch.tensor([[2.0, 0.0]])
    labels = torch.tensor([0])
    eps = 0.2
    logp = torch.log_softmax(logits, dim=1)[0]
    # target = (1 - eps) one-hot + eps / C uniform
    expected = -((1 - eps + eps / 2) * logp[0] + (eps / 2) * logp[1]).item()
    assert IdentityCE(eps)(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        IdentityCE(1.0)


def test_pairwise_euclidean() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = pairwise_euclidean(x)
    assert d[0, 1].item() == pytest.approx(5.0) and d[1, 0].item() == pytest.approx(5.0)
    assert d[0, 0].item() == pytest.approx(0.0, abs=1e-5)


def test_wrt_with_one_positive_and_one_negative_per_anchor() -> None:
    # points on a line: a=0, b=1 (same id), c=3 (other id)
    x = torch.tensor([[0.0], [1.0], [3.0]])
    labels = torch.tensor([0, 0, 1])
    # anchor a: d_pos = 1, d_neg = 3 -> softplus(1 - 3); anchor b: d_pos = 1, d_neg = 2 -> softplus(-1)
    # anchor c has no positive and is left out
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert WeightedRegularizedTriplet()(x, labels).item() == pytest.approx(expected, rel=1e-5)


def test_wrt_softmax_weights_favour_hard_pairs() -> None:
    # anchor 0 with positives at distance 1 and 2, negatives at distance 3 and 5
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [5.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    w_pos = torch.softmax(torch.tensor([1.0, 2.0]), 0)
    w_neg = torch.softmax(torch.tensor([-3.0, -5.0]), 0)
    d_pos = (w_pos * torch.tensor([1.0, 2.0])).sum()
    d_neg = (w_neg * torch.tensor([3.0, 5.0])).sum()
    anchor0 = torch.nn.functional.softplus(d_pos - d_neg)
    per_anchor = []
    dist = (x - x.t()).abs()
    for i in range(5):
        pos = [j for j in range(5) if labels[j] == labels[i] and j != i]
        neg = [j for j in range(5) if labels[j] != labels[i]]
        dp, dn = dist[i, pos], dist[i, neg]
        per_anchor.append(
            torch.nn.functional.softplus(
                (torch.softmax(dp, 0) * dp).sum() - (torch.softmax(-dn, 0) * dn).sum()
            )
        )
    assert per_anchor[0].item() == pytest.approx(anchor0.item(), rel=1e-6)
    expected = torch.stack(per_anchor).mean().item()
    assert WeightedRegularizedTriplet()(x, labels).item() == pytest.approx(expected, rel=1e-5)


def test_wrt_without_any_valid_anchor_is_zero_with_a_gradient() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    loss = WeightedRegularizedTriplet()(x, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0 and x.grad is not None


def test_reid_loss_combines_components_by_config_weights() -> None:
    torch.manual_seed(0)
    feats, logits = torch.randn(6, 4), torch.randn(6, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    parts = ReIDLoss(LossConfig(ce=0.5, wrt=2.0))(feats, logits, labels)
    ce = IdentityCE()(logits, labels)
    wrt = WeightedRegularizedTriplet()(feats, labels)
    assert parts["ce"].item() == pytest.approx(ce.item())
    assert parts["wrt"].item() == pytest.approx(wrt.item())
    assert parts["total"].item() == pytest.approx(0.5 * ce.item() + 2.0 * wrt.item(), rel=1e-6)
