"""Encode queries and galleries per query mode and evaluate them with :mod:`tvifm.eval`.

Query modes (DESIGN.md 2.7 and 4):

- ``ir``: the IR image alone;
- ``text``: the visible-side description alone;
- ``fusion``: ``f_ir + (f_rgb_txt - f_ir_txt)``;
- ``ensemble`` (MER): the mean of the BN-ed, L2-normalised ``fusion``, ``ir`` and ``text`` embeddings,
  so the score against a gallery image is ``(<q_F, g> + <q_ir, g> + <q_T, g>) / 3``;
- ``rgb2ir``: a visible image queried against an IR gallery (the reverse direction).

Every embedding is the BNNeck output (running statistics) L2-normalised; distance = -inner product.
The visible-side description of a query is, as in the Tri- protocol, the caption of a visible image of
the same identity chosen with a seeded generator, and the IR caption is the query image's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tvifm.data.base import Sample
from tvifm.data.images import read_image
from tvifm.data.sidecars import TextIndex
from tvifm.data.transforms import eval_transform
from tvifm.errors import TvifmError
from tvifm.models.tvifm import TVIFM

QUERY_MODES = ("ir", "text", "fusion", "ensemble", "rgb2ir")
TEXT_MODES = ("text", "fusion", "ensemble")


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


@torch.no_grad()
def encode_texts(model: TVIFM, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Text features ``(N, D)`` (before the BNNeck)."""
    model.eval()
    parts = [
        model.encode_text(model.tokenize(list(texts[i : i + batch_size]))).float().cpu()
        for i in range(0, len(texts), batch_size)
    ]
    return torch.cat(parts) if parts else torch.empty(0, model.dim)


@torch.no_grad()
def embed(model: TVIFM, features: torch.Tensor) -> torch.Tensor:
    """BNNeck (eval statistics) + L2 normalisation: the retrieval embedding of features."""
    model.eval()
    device = model.head.bn.weight.device
    return model.head.embed(features.to(device)).float().cpu()


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
    modes: Sequence[str] = ("ir", "text", "fusion", "ensemble"),
    seed: int = 0,
    batch_size: int = 128,
    progress: bool = False,
) -> QueryBank:
    """Embed IR queries for each requested mode (``rgb2ir`` is handled by swapping sets)."""
    unknown = set(modes) - set(QUERY_MODES)
    if unknown:
        raise TvifmError(f"unknown query modes {sorted(unknown)}; valid: {', '.join(QUERY_MODES)}")
    f_ir = encode_images(model, queries, size, batch_size, progress)
    bank = {"ir": embed(model, f_ir)}
    if set(modes) & set(TEXT_MODES):
        if text is None:
            raise MissingTextError("text query modes need captions (Tri- sidecars); none were found")
        t_rgb = encode_texts(model, witness_texts(queries, gallery_pool, text, seed))
        t_ir = encode_texts(model, own_texts(queries, text))
        bank["text"] = embed(model, t_rgb)
        bank["fusion"] = embed(model, model.fuse(f_ir, t_rgb, t_ir))
        bank["ensemble"] = (bank["fusion"] + bank["ir"] + bank["text"]) / 3.0
    return QueryBank(list(queries), {m: bank[m] for m in modes if m in bank})


def similarity(query: torch.Tensor, gallery: torch.Tensor) -> np.ndarray:
    """Inner products ``(Q, G)`` as float32."""
    return (query @ gallery.t()).numpy().astype(np.float32)


Embedder = Callable[[Sequence[Sample]], torch.Tensor]


def gallery_embeddings(
    model: TVIFM,
    gallery: Sequence[Sample],
    size: Sequence[int],
    batch_size: int = 128,
    progress: bool = False,
) -> torch.Tensor:
    """Retrieval embeddings of gallery images."""
    return embed(model, encode_images(model, gallery, size, batch_size, progress))


def normalise(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows."""
    return F.normalize(x, dim=-1)
