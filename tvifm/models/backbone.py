"""Two-stream ResNet backbone for VI-ReID (docs/design.md, "The method").

Each modality has its own stem (conv1, bn1, relu, maxpool); layer1-4 are shared, the last stage runs
with stride 1, and GeM pooling gives one feature vector per image. ``resnet50`` (2048-d) and
``resnet18`` (512-d) come from torchvision and can load ImageNet weights from a local file; ``tiny``
is a narrow BasicBlock ResNet for the CPU default.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, ResNet

from tvifm.data.base import Modality
from tvifm.errors import ConfigError


class GeM(nn.Module):
    """Generalised-mean pooling over the spatial dimensions with a learnable exponent ``p``."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))  # 1-d: DeepSpeed cannot broadcast 0-d params
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / self.p)


def _tiny_resnet(widths: Sequence[int]) -> nn.Module:
    """A ResNet with one BasicBlock per stage and the given stage widths."""
    stem_width = widths[0]
    model = nn.Module()
    model.conv1 = nn.Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(stem_width)
    model.relu = nn.ReLU(inplace=True)
    model.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    inplanes = stem_width
    for i, width in enumerate(widths, start=1):
        stride = 1 if i == 1 else 2
        downsample = None
        if stride != 1 or inplanes != width:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, width, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(width)
            )
        setattr(model, f"layer{i}", nn.Sequential(BasicBlock(inplanes, width, stride, downsample)))
        inplanes = width
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


def _set_last_stride(layer4: nn.Sequential, stride: int) -> None:
    block = layer4[0]
    conv = block.conv2 if hasattr(block, "conv3") else block.conv1
    conv.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def load_imagenet_weights(model: ResNet, path: str | Path) -> None:
    """Load torchvision ImageNet weights from a local ``.pth`` state dict or ``.safetensors`` file.

    The file is read with ``torch.load(weights_only=True)`` (no unpickling of code) and must hold the
    torchvision key names; the classifier (``fc``) may be missing.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"backbone.weights: {path} does not exist (give a local ImageNet weights file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ConfigError(
            f"backbone.weights: {path} does not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def _base_resnet(arch: str, widths: Sequence[int], weights: str | None) -> tuple[nn.Module, int]:
    if arch == "tiny":
        if weights:
            raise ConfigError("backbone.weights is only supported for resnet18/resnet50, not the tiny arch")
        return _tiny_resnet(widths), int(widths[-1])
    builders = {"resnet18": (resnet18, 512), "resnet50": (resnet50, 2048)}
    if arch not in builders:
        raise ConfigError(f"unknown backbone.arch {arch!r}; valid: tiny, {', '.join(builders)}")
    build, dim = builders[arch]
    model = build(weights=None)
    if weights:
        load_imagenet_weights(model, weights)
    return model, dim


class TwoStreamResNet(nn.Module):
    """Modality-specific stems, shared stages, GeM pooling. ``forward(x, modality)`` -> ``(B, dim)``."""

    def __init__(
        self,
        arch: str = "tiny",
        *,
        weights: str | None = None,
        last_stride: int = 1,
        gem_p: float = 3.0,
        tiny_widths: Sequence[int] = (32, 64, 96, 128),
    ) -> None:
        super().__init__()
        base, self.dim = _base_resnet(arch, tiny_widths, weights)
        stem = nn.Sequential(base.conv1, base.bn1, base.relu, base.maxpool)
        self.stems = nn.ModuleDict({"visible": stem, "ir": copy.deepcopy(stem)})
        _set_last_stride(base.layer4, last_stride)
        self.shared = nn.Sequential(base.layer1, base.layer2, base.layer3, base.layer4)
        self.pool = GeM(gem_p)

    def forward(self, x: torch.Tensor, modality: Modality) -> torch.Tensor:
        return self.forward_many([(x, modality)])[0]

    def forward_many(self, batches: Sequence[tuple[torch.Tensor, Modality]]) -> list[torch.Tensor]:
        """Features of several ``(images, modality)`` batches, in the order given: all batches of one
        modality go through its stem together, then every batch through the shared stages as one batch.

        Training needs the single passes: BatchNorm then normalises with the statistics of everything
        that reaches it, the ones its running averages (and so inference) see. Separate passes would
        normalise each batch on its own in training, e.g. the visible and the channel-augmented visible
        images in the visible stem, or each modality in the shared stages, which hides the modality gap
        that the mixed running statistics then open at test time.
        """
        modalities = list(dict.fromkeys(m for _, m in batches))
        for modality in modalities:  # before any BatchNorm statistics move
            if modality not in self.stems:
                raise ValueError(f"modality must be 'visible' or 'ir', got {modality!r}")
        stems: dict[int, torch.Tensor] = {}  # stem output of each batch, by its position
        for modality in modalities:
            index = [i for i, (_, m) in enumerate(batches) if m == modality]
            out = self.stems[modality](torch.cat([batches[i][0] for i in index]))
            stems.update(zip(index, out.split([batches[i][0].shape[0] for i in index]), strict=True))
        out = self.pool(self.shared(torch.cat([stems[i] for i in range(len(batches))])))
        return list(out.split([images.shape[0] for images, _ in batches]))
