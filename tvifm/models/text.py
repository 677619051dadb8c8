"""CLIP text encoder through open_clip (docs/design.md, "The method").

The tower is open_clip's ``TextTransformer``; its feature is the end-of-text token's output after the
final LayerNorm and CLIP's text projection, then a linear projection to the backbone's feature size.
``RN50`` takes its architecture from open_clip's own RN50 config (12 layers, width 512, context 77) and
loads CLIP weights from a local checkpoint file through open_clip's loader; ``tiny`` is a small tower
of the same architecture for the CPU default. The tokenizer is always the CLIP BPE tokenizer shipped
with open_clip (49,408 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tvifm.errors import ConfigError

TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
TRAINABLE_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


@dataclass(frozen=True)
class TextArch:
    """Architecture of a CLIP text tower."""

    width: int
    heads: int
    layers: int
    embed_dim: int
    vocab_size: int = 49408
    context_length: int = 77


TINY = TextArch(width=128, heads=4, layers=2, embed_dim=128)


def text_arch(name: str, context_length: int = 77) -> TextArch:
    """The named tower: ``tiny`` or any open_clip model config name (``RN50``, ``ViT-B-32``, ...)."""
    if name == "tiny":
        return TextArch(**{**TINY.__dict__, "context_length": context_length})
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ConfigError(f"unknown text.arch {name!r}; valid: tiny, RN50 (or another open_clip config name)")
    text = cfg["text_cfg"]
    return TextArch(
        width=text["width"],
        heads=text["heads"],
        layers=text["layers"],
        embed_dim=cfg["embed_dim"],
        vocab_size=text.get("vocab_size", 49408),
        context_length=min(context_length, text.get("context_length", 77)),
    )


def build_tokenizer(context_length: int = 77) -> Any:
    """The CLIP BPE tokenizer open_clip ships (``tokenizer(list[str]) -> LongTensor[B, context]``)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def load_clip_text_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The text-tower tensors of a local CLIP checkpoint, read with open_clip's state-dict loader.

    Accepts open_clip/OpenAI-format state dicts (``.pt``/``.bin``/``.safetensors``, optionally under a
    ``state_dict`` key or with a ``module.`` prefix); never unpickles code (``weights_only=True``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"text.checkpoint: {path} does not exist (give a local CLIP checkpoint file)")
    from open_clip.factory import load_state_dict

    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint files
        raise ConfigError(f"text.checkpoint: {path} is not a readable CLIP state dict ({exc})") from exc
    text = {k: v for k, v in state.items() if k.startswith(TEXT_PREFIXES)}
    if not text:
        raise ConfigError(f"text.checkpoint: {path} holds no CLIP text-tower weights (no token_embedding.*)")
    return text


class TextEncoder(nn.Module):
    """CLIP text tower + projection to ``out_dim``; ``forward(tokens)`` -> ``(B, out_dim)``."""

    def __init__(
        self,
        arch: str,
        out_dim: int,
        *,
        checkpoint: str | None = None,
        quick_gelu: bool = False,
        context_length: int = 77,
    ) -> None:
        super().__init__()
        from open_clip.transformer import QuickGELU, TextTransformer

        self.arch = text_arch(arch, context_length)
        act = QuickGELU if quick_gelu else nn.GELU
        self.tower = TextTransformer(
            context_length=self.arch.context_length,
            vocab_size=self.arch.vocab_size,
            width=self.arch.width,
            heads=self.arch.heads,
            layers=self.arch.layers,
            output_dim=self.arch.embed_dim,
            act_layer=act,
        )
        if checkpoint:
            self._load(checkpoint)
        self.proj = nn.Linear(self.arch.embed_dim, out_dim)

    def _load(self, checkpoint: str) -> None:
        state = load_clip_text_state(checkpoint)
        pos = state.get("positional_embedding")
        if pos is not None and pos.shape[0] > self.arch.context_length:
            state["positional_embedding"] = pos[: self.arch.context_length]
        try:
            self.tower.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"text.checkpoint {checkpoint} does not fit text.arch: {exc}") from exc

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.tower(tokens))

    def set_trainable(self, parts: tuple[str, ...] = TRAINABLE_PARTS) -> None:
        """Make exactly ``parts`` of the tower (and the projection) trainable; freeze the rest."""
        for name, param in self.tower.named_parameters():
            param.requires_grad = name.split(".")[0] in parts
        for param in self.proj.parameters():
            param.requires_grad = True
