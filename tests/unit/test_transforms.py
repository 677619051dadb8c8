"""Transforms: output shapes, normalisation, what channel augmentation does to colour, random erasing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tvifm.data.transforms import (
    ERASE_FILL,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomChannelExchange,
    eval_transform,
    to_training_tensor,
    train_transforms,
)


def _colour_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(50, 30, 3), dtype=np.uint8))


def test_train_and_test_transforms_give_normalised_tensors_of_the_configured_size() -> None:
    img = _colour_image()
    tensor = to_training_tensor(img, [64, 32])
    assert tensor.shape == (3, 64, 32) and tensor.dtype == torch.uint8
    for name, tf in train_transforms([64, 32], pad=4).items():
        out = tf(tensor)
        assert out.shape == (3, 64, 32), name
        assert out.dtype == torch.float32
    out = eval_transform([64, 32])(img)
    assert out.shape == (3, 64, 32)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.all(out * std + mean >= -1e-5) and torch.all(out * std + mean <= 1 + 1e-5)


def test_test_transform_is_deterministic() -> None:
    img = _colour_image()
    tf = eval_transform([64, 32])
    assert torch.equal(tf(img), tf(img))


def test_channel_exchange_removes_colour_and_keeps_one_channel_or_luminance() -> None:
    torch.manual_seed(0)
    img = torch.rand(3, 8, 4)
    gray = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    candidates = [img[0], img[1], img[2], gray]
    seen = set()
    for _ in range(60):
        out = RandomChannelExchange(1.0)(img)
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
        matches = [i for i, c in enumerate(candidates) if torch.allclose(out[0], c, atol=1e-6)]
        assert matches
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}


def test_channel_exchange_with_p_zero_is_identity() -> None:
    img = torch.rand(3, 8, 4)
    assert torch.equal(RandomChannelExchange(0.0)(img), img)


def test_visible_ca_stream_is_colourless_and_visible_stream_is_not() -> None:
    torch.manual_seed(1)
    tfs = train_transforms([32, 16], pad=0, flip=False)
    img = to_training_tensor(_colour_image(), [32, 16])
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    ca = tfs["visible_ca"](img) * std + mean
    vis = tfs["visible"](img) * std + mean
    assert torch.allclose(ca[0], ca[1], atol=1e-5) and torch.allclose(ca[1], ca[2], atol=1e-5)
    assert not torch.allclose(vis[0], vis[1], atol=1e-2)


def test_random_erasing_puts_a_colourless_patch_in_every_stream() -> None:
    torch.manual_seed(2)
    img = to_training_tensor(_colour_image(), [32, 16])
    std, mean = torch.tensor(IMAGENET_STD).view(3, 1, 1), torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    plain = train_transforms([32, 16], pad=0, flip=False)
    erased = train_transforms([32, 16], pad=0, flip=False, random_erasing=1.0)
    for name, tf in erased.items():
        out = tf(img) * std + mean
        patch = (out - ERASE_FILL).abs().amax(dim=0) < 1e-5  # every channel at the fill value
        assert 0.02 * 32 * 16 <= int(patch.sum()) <= 0.4 * 32 * 16 + 16, name
        if name == "visible_ca":
            assert torch.allclose(out[0], out[1], atol=1e-5) and torch.allclose(out[1], out[2], atol=1e-5)
    out = plain["visible"](img) * std + mean
    assert int(((out - ERASE_FILL).abs().amax(dim=0) < 1e-5).sum()) == 0  # off by default
    with pytest.raises(ValueError, match="random erasing probability"):
        train_transforms([32, 16], random_erasing=1.5)
