"""Backbone, text encoder, fusion, heads and the TVI-FM model (features only, no losses)."""

from tvifm.models.backbone import GeM, TwoStreamResNet
from tvifm.models.heads import BNNeckHead, semantic_filtered_fusion
from tvifm.models.text import TextEncoder, build_tokenizer
from tvifm.models.tvifm import TVIFM

__all__ = [
    "TVIFM",
    "BNNeckHead",
    "GeM",
    "TextEncoder",
    "TwoStreamResNet",
    "build_tokenizer",
    "semantic_filtered_fusion",
]
