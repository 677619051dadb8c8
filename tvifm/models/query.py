"""Query modes: the one definition of their names, their inputs and the ensemble formula (MER).

A query searches gallery images of the *target* modality (docs/design.md, "Query modes"):

- ``ir``: the IR image alone, against visible images;
- ``text``: the visible-side description ``T_rgb`` alone;
- ``fusion``: the semantic filtered fusion ``f_ir + (f_T_rgb - f_T_ir)`` with the IR caption ``T_ir``;
- ``ensemble`` (MER): the mean of the ``fusion``, ``ir`` and ``text`` embeddings, so its score against a
  gallery embedding ``g`` is ``(<q_F, g> + <q_ir, g> + <q_T, g>) / 3``;
- ``rgb2ir``: a visible image against IR images (the reverse direction).

Offline evaluation, validation, the retrieval service, the MLflow pyfunc model and the experiments all
take the names and :func:`mer` from here; :meth:`tvifm.models.tvifm.TVIFM.query_embeddings` computes
the embeddings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from tvifm.errors import TvifmError

QueryMode = Literal["ir", "text", "fusion", "ensemble", "rgb2ir"]
QUERY_MODES: tuple[str, ...] = get_args(QueryMode)
TEXT_MODES: tuple[str, ...] = ("text", "fusion", "ensemble")
IR_QUERY_MODES: tuple[str, ...] = ("ir", "text", "fusion", "ensemble")  # IR-side queries, visible gallery
MER_TERMS: tuple[str, ...] = ("fusion", "ir", "text")  # the embeddings the ensemble averages


@dataclass(frozen=True)
class ModeNeeds:
    """Which inputs a query mode needs."""

    image: bool
    description: bool
    ir_caption: bool


MODE_NEEDS: dict[str, ModeNeeds] = {
    "ir": ModeNeeds(True, False, False),
    "text": ModeNeeds(False, True, False),
    "fusion": ModeNeeds(True, True, True),
    "ensemble": ModeNeeds(True, True, True),
    "rgb2ir": ModeNeeds(True, False, False),
}

# what a model of each training stage answers (a stage-1 model has no trained text tower)
STAGE_MODES: dict[str, tuple[str, ...]] = {"base": ("ir", "rgb2ir"), "joint": QUERY_MODES}


def check_modes(modes: Iterable[str]) -> tuple[str, ...]:
    """``modes`` as a tuple; unknown names raise :class:`TvifmError` listing the valid ones."""
    modes = tuple(modes)
    unknown = sorted(set(modes) - set(QUERY_MODES))
    if unknown:
        raise TvifmError(f"unknown query mode {unknown}; valid: {', '.join(QUERY_MODES)}")
    return modes


def main_mode(modes: Iterable[str]) -> str:
    """The mode a model is selected and registered on: ``ensemble`` when present, else ``ir``."""
    return "ensemble" if "ensemble" in set(modes) else "ir"


def query_modality(mode: str) -> str:
    """Modality of the query image of ``mode`` (``visible`` for ``rgb2ir``, else ``ir``)."""
    return "visible" if mode == "rgb2ir" else "ir"


def target_modality(mode: str) -> str:
    """Modality of the gallery items ``mode`` searches (``ir`` for ``rgb2ir``, else ``visible``)."""
    return "ir" if mode == "rgb2ir" else "visible"


def mer(fusion: torch.Tensor, ir: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Multi-embedding retrieval: the mean of the three L2-normalised query embeddings."""
    return (fusion + ir + text) / 3.0
