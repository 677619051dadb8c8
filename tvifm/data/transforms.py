"""Image transforms: resize, pad-crop, flip, random erasing, normalisation and CAJ-style channel augmentation.

Channel augmentation (random channel exchange / grayscale of visible images) removes colour from a
visible image in one of several ways, so the backbone learns features that survive the loss of colour
that IR imaging causes. All randomness uses torch's generator, so ``torch.manual_seed`` (and DataLoader
worker seeding) makes it reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
# random erasing fills with the luminance of the ImageNet mean on every channel: a colourless patch, so a
# channel-augmented (colourless) image stays colourless
ERASE_FILL = sum(w * m for w, m in zip(GRAY_WEIGHTS, IMAGENET_MEAN, strict=True))

Transform = Callable[[Image.Image], torch.Tensor]


class RandomChannelExchange(torch.nn.Module):
    """With probability ``p``, replace all three channels by one of R, G, B or the luminance (uniformly).

    Works on float tensors ``(3, H, W)`` (or batches ``(..., 3, H, W)``) before normalisation.
    """

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability p={p} must lie in [0, 1]")
        self.p = p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-3] != 3:
            raise ValueError(f"channel exchange needs 3-channel images, got shape {tuple(img.shape)}")
        if torch.rand(()) >= self.p:
            return img
        choice = int(torch.randint(0, 4, ()))
        if choice < 3:
            channel = img[..., choice : choice + 1, :, :]
        else:
            weights = torch.tensor(GRAY_WEIGHTS, dtype=img.dtype).view(3, 1, 1)
            channel = (img * weights).sum(dim=-3, keepdim=True)
        return channel.expand_as(img).clone()


class RandomGrayscale3(torch.nn.Module):
    """With probability ``p``, convert to luminance replicated on three channels (float tensors)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return img
        weights = torch.tensor(GRAY_WEIGHTS, dtype=img.dtype).view(3, 1, 1)
        return (img * weights).sum(dim=-3, keepdim=True).expand_as(img).clone()


def _geometry(size: Sequence[int], pad: int, flip: bool) -> list[torch.nn.Module]:
    steps: list[torch.nn.Module] = []
    if pad > 0:
        steps += [v2.Pad(pad), v2.RandomCrop(tuple(size))]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return steps


def _to_float() -> list[torch.nn.Module]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def _erasing(p: float) -> list[torch.nn.Module]:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random erasing probability {p} must lie in [0, 1]")
    return [v2.RandomErasing(p=p, value=ERASE_FILL)] if p > 0 else []


def _normalise() -> v2.Normalize:
    return v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)


def to_training_tensor(img: Image.Image, size: Sequence[int]) -> torch.Tensor:
    """Resize a decoded image to ``size`` (height, width) once: a uint8 ``(3, H, W)`` tensor that the
    training transforms take (so the deterministic resize is not repeated every epoch)."""
    height, width = size
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    return v2.functional.pil_to_tensor(img.convert("RGB"))


def train_transforms(
    size: Sequence[int],
    pad: int = 4,
    flip: bool = True,
    channel_aug: bool = True,
    random_erasing: float = 0.0,
) -> dict[str, Transform]:
    """Training transforms by stream: ``visible``, ``visible_ca`` (channel-augmented) and ``ir``.

    They take the uint8 tensors of :func:`to_training_tensor` (already at ``size``) and apply
    pad + random crop, flip, scaling to [0, 1], the stream's colour transform, random erasing (with
    probability ``random_erasing`` a rectangle of 2-40 % of the image becomes a grey patch, as in the
    AGW/CAJ baselines) and normalisation.

    ``visible_ca`` always exchanges channels when ``channel_aug`` is on (it is the CA view of joint
    learning); otherwise it equals ``visible``. IR images are random-grayscaled half the time, which
    changes nothing for true single-band frames and evens out colour casts of 3-channel IR files.
    """
    geo, to_float = _geometry(size, pad, flip), _to_float()
    erase = _erasing(random_erasing)
    visible = v2.Compose([*geo, *to_float, *erase, _normalise()])
    ca = [RandomChannelExchange(1.0)] if channel_aug else []
    visible_ca = v2.Compose([*geo, *to_float, *ca, *erase, _normalise()])
    ir = v2.Compose([*geo, *to_float, RandomGrayscale3(0.5), *erase, _normalise()])
    return {"visible": visible, "visible_ca": visible_ca, "ir": ir}


def eval_transform(size: Sequence[int]) -> Transform:
    """Deterministic evaluation transform: resize and normalise."""
    return v2.Compose([v2.Resize(tuple(size), antialias=True), *_to_float(), _normalise()])
