"""The TVI-FM model: two-stream backbone, CLIP text encoder, shared BNNeck head. Returns features.

Losses live in :mod:`tvifm.losses` and evaluation in :mod:`tvifm.eval`; this module computes
features only. Stage 1 (``base``) trains the backbone and head; stage 2 (``joint``) freezes the
backbone (no gradients, BatchNorm statistics fixed) and trains the text encoder and the shared head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from tvifm.config.schema import BackboneConfig, TextConfig
from tvifm.data.base import Modality
from tvifm.models.backbone import TwoStreamResNet
from tvifm.models.heads import BNNeckHead, semantic_filtered_fusion
from tvifm.models.query import IR_QUERY_MODES, check_modes, mer
from tvifm.models.text import TextEncoder, build_tokenizer

Stage = Literal["base", "joint"]
STREAMS = ("visible", "visible_ca", "ir", "fusion", "visible_text", "ir_text")
IMAGE_STREAMS: dict[str, Modality] = {"visible": "visible", "visible_ca": "visible", "ir": "ir"}


class TVIFM(nn.Module):
    """Text-enhanced VI-ReID model; see docs/design.md, "The method".

    Built from the two model sections of the config (``backbone``, ``text``); ``num_classes`` is the
    number of training identities of the identity classifier. :func:`tvifm.models.create_model` and
    :func:`tvifm.models.load_model` are the public ways to get one.
    """

    def __init__(self, backbone: BackboneConfig, text: TextConfig, num_classes: int) -> None:
        super().__init__()
        b, t = backbone, text
        self.backbone = TwoStreamResNet(
            b.arch, weights=b.weights, last_stride=b.last_stride, gem_p=b.gem_p, tiny_widths=b.tiny_widths
        )
        self.dim = self.backbone.dim
        self.text = TextEncoder(
            t.arch,
            self.dim,
            checkpoint=t.checkpoint,
            quick_gelu=t.quick_gelu,
            context_length=t.context_length,
        )
        self.head = BNNeckHead(self.dim, num_classes)
        self.num_classes = num_classes
        self._tokenizer = None
        self.stage: Stage = "base"

    @property
    def tokenizer(self):
        """The CLIP BPE tokenizer, built on first use."""
        if self._tokenizer is None:
            self._tokenizer = build_tokenizer(self.text.arch.context_length)
        return self._tokenizer

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``(B, context_length)`` on the model's device."""
        return self.tokenizer(texts).to(self.head.bn.weight.device)

    def encode_image(self, images: torch.Tensor, modality: Modality) -> torch.Tensor:
        """Backbone features (before the BNNeck) of a batch of one modality."""
        return self.encode_images([(images, modality)])[0]

    def encode_images(self, batches: Sequence[tuple[torch.Tensor, Modality]]) -> list[torch.Tensor]:
        """Backbone features of several ``(images, modality)`` batches, passed through the shared stages
        together (see :meth:`TwoStreamResNet.forward_many`)."""
        if self.stage == "joint":
            with torch.no_grad():
                return self.backbone.forward_many(batches)
        return self.backbone.forward_many(batches)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features (before the BNNeck), projected to the backbone's feature size."""
        return self.text(tokens)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Text features ``(N, D)`` (before the BNNeck) on the CPU, in batches, in eval mode."""
        self.eval()
        parts = [
            self.encode_text(self.tokenize(list(texts[i : i + batch_size]))).float().cpu()
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(parts) if parts else torch.empty(0, self.dim)

    @torch.no_grad()
    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Retrieval embeddings of features: BNNeck (eval statistics) + L2 normalisation, on the CPU."""
        self.eval()
        return self.head.embed(features.to(self.head.bn.weight.device)).float().cpu()

    @torch.no_grad()
    def query_embeddings(
        self,
        modes: Sequence[str],
        image: torch.Tensor | None = None,
        description: torch.Tensor | None = None,
        ir_caption: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Retrieval embeddings ``(N, D)`` of each requested query mode (:mod:`tvifm.models.query`).

        ``image``: backbone features of the query images (IR images, or visible ones for ``rgb2ir``);
        ``description``: text features of the visible-side descriptions ``T_rgb``; ``ir_caption``: text
        features of the IR captions ``T_ir``. Only the inputs the requested modes need are required.
        """
        modes = check_modes(modes)
        out: dict[str, torch.Tensor] = {}
        if {"ir", "rgb2ir", "fusion", "ensemble"} & set(modes):
            out["ir"] = self.embed(_required(image, "image features"))
        if {"text", "fusion", "ensemble"} & set(modes):
            out["text"] = self.embed(_required(description, "description features"))
        if {"fusion", "ensemble"} & set(modes):
            caption = _required(ir_caption, "IR caption features")
            out["fusion"] = self.embed(self.fuse(image, description, caption))  # type: ignore[arg-type]
        if "ensemble" in modes:
            out["ensemble"] = mer(out["fusion"], out["ir"], out["text"])
        if "rgb2ir" in modes:
            out["rgb2ir"] = out["ir"]
        return {mode: out[mode] for mode in modes}

    def fuse(self, ir_image: torch.Tensor, visible_text: torch.Tensor, ir_text: torch.Tensor) -> torch.Tensor:
        """Semantic filtered fusion of an IR image with the visible-side and IR descriptions."""
        return semantic_filtered_fusion(ir_image, visible_text, ir_text)

    def stream_features(self, batch: dict[str, Any], streams: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pre-BNNeck features of each requested stream of a training batch.

        Streams: ``visible``, ``visible_ca`` (channel-augmented visible), ``ir``, ``visible_text``,
        ``ir_text`` and ``fusion`` (semantic filtered fusion of ``ir`` with both texts).
        """
        unknown = set(streams) - set(STREAMS)
        if unknown:
            raise ValueError(f"unknown streams {sorted(unknown)}; valid: {', '.join(STREAMS)}")
        feats: dict[str, torch.Tensor] = {}
        wanted = set(streams) | ({"ir"} if "fusion" in streams else set())
        images = [(n, m) for n, m in IMAGE_STREAMS.items() if n in wanted]
        if images:  # one pass through the shared stages (their BatchNorm sees both modalities)
            out = self.encode_images([(batch[n], modality) for n, modality in images])
            feats.update(zip([n for n, _ in images], out, strict=True))
        if wanted & {"visible_text", "ir_text", "fusion"}:
            tokens = self.tokenize(list(batch["visible_text"]) + list(batch["ir_text"]))
            feats["visible_text"], feats["ir_text"] = self.encode_text(tokens).chunk(2)
        if "fusion" in wanted:
            feats["fusion"] = self.fuse(feats["ir"], feats["visible_text"], feats["ir_text"])
        return {name: feats[name] for name in streams}

    def forward(self, batch: dict[str, Any], streams: Sequence[str]) -> dict[str, torch.Tensor]:
        """Features of the given streams stacked in order, their BNNeck features and identity logits."""
        feats = self.stream_features(batch, streams)
        stacked = torch.cat([feats[name] for name in streams])
        bn, logits = self.head(stacked)
        return {"features": stacked, "bn_features": bn, "logits": logits}

    def set_stage(self, stage: Stage) -> None:
        """Select which parameters train: the backbone and head (``base``) or text and head (``joint``)."""
        if stage not in ("base", "joint"):
            raise ValueError(f"stage must be 'base' or 'joint', got {stage!r}")
        self.stage = stage
        for p in self.backbone.parameters():
            p.requires_grad = stage == "base"
        for p in self.text.parameters():
            p.requires_grad = stage == "joint"
        if stage == "joint":
            self.text.set_trainable()
        for name, p in self.head.named_parameters():
            p.requires_grad = name != "bn.bias"

    def train(self, mode: bool = True) -> TVIFM:
        super().train(mode)
        if self.stage == "joint":
            self.backbone.eval()  # frozen: keep its BatchNorm statistics fixed
        return self


def _required(value: torch.Tensor | None, what: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"{what} are required by the requested query modes")
    return value


__all__ = ["IR_QUERY_MODES", "TVIFM"]
