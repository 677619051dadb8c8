"""The model layer: backbone, text encoder, fusion, heads, the TVI-FM model (features only, no losses),
its query modes, its run directory and the public ways to build one (:func:`create_model`,
:func:`load_model`)."""

from tvifm.models.backbone import GeM, TwoStreamResNet
from tvifm.models.factory import LoadedModel, create_model, load_model, load_run, resolve_device
from tvifm.models.heads import BNNeckHead, semantic_filtered_fusion
from tvifm.models.query import MODE_NEEDS, QUERY_MODES, mer
from tvifm.models.run import RunDir
from tvifm.models.text import TextEncoder, build_tokenizer
from tvifm.models.tvifm import TVIFM

__all__ = [
    "MODE_NEEDS",
    "QUERY_MODES",
    "TVIFM",
    "BNNeckHead",
    "GeM",
    "LoadedModel",
    "RunDir",
    "TextEncoder",
    "TwoStreamResNet",
    "build_tokenizer",
    "create_model",
    "load_model",
    "load_run",
    "mer",
    "resolve_device",
    "semantic_filtered_fusion",
]
