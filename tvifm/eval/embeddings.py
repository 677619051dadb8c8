"""Embeddings of dataset samples for evaluation: gallery images and query banks per query mode.

The query modes and their formulas belong to the model (:mod:`tvifm.models.query`,
:meth:`~tvifm.models.tvifm.TVIFM.query_embeddings`); this module reads the samples' images and texts
and hands the model their features. Every embedding is the BNNeck output (running statistics)
L2-normalised; distance = -inner product. The visible-side description of a query is, as in the Tri-
protocol, the caption of a visible image of the same identity chosen with a seeded generator, and the
IR caption is the query image's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from tvifm.data.base import Sample
from tvifm.data.images import read_image
from tvifm.data.sidecars import TextIndex
from tvifm.data.transforms import eval_transform
from tvifm.errors import TvifmError
from tvifm.models.query import IR_QUERY_MODES, TEXT_MODES, check_modes
from tvifm.models.tvifm import TVIFM


class MissingTextError(TvifmError):
    """A text query mode was asked for but a query or its identity has no caption."""


@torch.no_grad()
def encode_images(
    model: TVIFM,
    samples: Sequence[Sample],
    size: Sequence[int],
    batch_size: int = 128,
    progress: bool = False,
) -> torch.Tensor:
    """Backbone features ``(N, D)`` of samples (each through the stem of its own modality)."""
    model.eval()
    tf = eval_transform(size)
    device = model.head.bn.weight.device
    out = torch.empty(len(samples), model.dim)
    order = sorted(range(len(samples)), key=lambda i: samples[i].modality)
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in tqdm(chunks, desc="encode images", disable=not progress, leave=False):
        for modality in ("visible", "ir"):
            idx = [i for i in chunk if samples[i].modality == modality]
            if idx:
                x = torch.stack([tf(read_image(samples[i].path)) for i in idx]).to(device)
                out[idx] = model.encode_image(x, modality).float().cpu()
    return out


def witness_texts(
    queries: Sequence[Sample], pool: Sequence[Sample], text: TextIndex, seed: int = 0
) -> list[str]:
    """For each query, the caption of a visible image of its identity, chosen with a seeded RNG."""
    by_id: dict[int, list[str]] = {}
    for s in pool:
        caption = text.caption(s)
        if caption is not None and s.modality == "visible":
            by_id.setdefault(s.pid, []).append(caption.description)
    rng = np.random.default_rng(seed)
    out = []
    for q in queries:
        options = by_id.get(q.pid) or text.id_captions("visible", q.pid)
        if not options:
            raise MissingTextError(f"identity {q.pid} has no visible-side caption; text modes need one")
        out.append(options[int(rng.integers(len(options)))])
    return out


def own_texts(samples: Sequence[Sample], text: TextIndex) -> list[str]:
    """The caption of each sample itself (for IR queries: the IR caption T_ir)."""
    out = []
    for s in samples:
        caption = text.caption(s)
        if caption is None:
            raise MissingTextError(f"{s.rel} has no caption; text query modes need the Tri- sidecars")
        out.append(caption.description)
    return out


@dataclass
class QueryBank:
    """Embeddings of one set of queries under every available mode, rows aligned with ``samples``."""

    samples: list[Sample]
    embeddings: dict[str, torch.Tensor]


def build_query_bank(
    model: TVIFM,
    queries: Sequence[Sample],
    gallery_pool: Sequence[Sample],
    text: TextIndex | None,
    size: Sequence[int],
    *,
    modes: Sequence[str] = IR_QUERY_MODES,
    seed: int = 0,
    batch_size: int = 128,
    progress: bool = False,
) -> QueryBank:
    """Embed IR queries for each requested mode (``rgb2ir`` is handled by swapping sets)."""
    modes = check_modes(modes)
    f_ir = encode_images(model, queries, size, batch_size, progress)
    t_rgb = t_ir = None
    if set(modes) & set(TEXT_MODES):
        if text is None:
            raise MissingTextError("text query modes need captions (Tri- sidecars); none were found")
        t_rgb = model.encode_texts(witness_texts(queries, gallery_pool, text, seed))
        t_ir = model.encode_texts(own_texts(queries, text))
    return QueryBank(list(queries), model.query_embeddings(modes, f_ir, t_rgb, t_ir))


def gallery_embeddings(
    model: TVIFM,
    gallery: Sequence[Sample],
    size: Sequence[int],
    batch_size: int = 128,
    progress: bool = False,
) -> torch.Tensor:
    """Retrieval embeddings of gallery images."""
    return model.embed(encode_images(model, gallery, size, batch_size, progress))
