"""Evaluation of a model on a dataset split: protocols x query modes, trial-averaged.

:class:`ValidationSet` is the trainer's default :class:`Evaluator` (checkpoint selection on the
validation identities, never the test set); :mod:`tvifm.eval.offline` evaluates the test split.
Embeddings are computed once per sample and mode; every trial of every protocol then only indexes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tvifm.config.schema import Config
from tvifm.data.base import DatasetSplits, EvalSet, Sample
from tvifm.data.registry import protocol_sets
from tvifm.data.sidecars import TextIndex
from tvifm.errors import TvifmError
from tvifm.eval import evaluate_sets
from tvifm.eval.embeddings import build_query_bank, gallery_embeddings
from tvifm.eval.rerank import Rerank
from tvifm.models.query import IR_QUERY_MODES, main_mode
from tvifm.models.tvifm import TVIFM


def evaluate_model(
    model: TVIFM,
    sets: dict[str, list[EvalSet]],
    text: TextIndex | None,
    cfg: Config,
    modes: Sequence[str] = IR_QUERY_MODES,
    progress: bool = False,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{evaluation name: {mode: metrics}}``; reverse-direction evaluations use image features only."""
    size, batch, seed = cfg.data.image_size, cfg.eval.batch_size, cfg.eval.seed
    rerank = reranking(cfg)
    results: dict[str, dict[str, dict[str, float]]] = {}
    feats: dict[tuple[str, str], dict[Sample, np.ndarray]] = {}
    for name, eval_sets in sets.items():
        queries = _distinct(s for es in eval_sets for s in es.query)
        gallery = _distinct(s for es in eval_sets for s in es.gallery)
        reverse = queries[0].modality == "visible"
        key_g = ("gallery", gallery[0].modality)
        if key_g not in feats or not set(gallery) <= feats[key_g].keys():
            emb = gallery_embeddings(model, gallery, size, batch, progress)
            feats.setdefault(key_g, {}).update(zip(gallery, emb.numpy(), strict=True))
        if reverse:
            q_modes = {"rgb2ir": gallery_embeddings(model, queries, size, batch, progress)}
        else:
            pool = [s for es in eval_sets for s in es.gallery]
            wanted = [m for m in modes if m != "rgb2ir"]
            bank = build_query_bank(
                model, queries, pool, text, size, modes=wanted, seed=seed, batch_size=batch, progress=progress
            )
            q_modes = bank.embeddings
        results[name] = {}
        for mode, q_emb in q_modes.items():
            q_map = dict(zip(queries, q_emb.numpy(), strict=True))
            summary = evaluate_sets(eval_sets, q_map, feats[key_g], "cosine", cfg.eval.max_rank, rerank)
            results[name][mode] = {**summary.to_dict(), "cmc": [float(v) for v in summary.cmc]}
    return results


def reranking(cfg: Config) -> Rerank | None:
    """The re-ranking ``eval.rerank`` asks for (``eval.rerank_k1/k2/lambda``), or None when it is off."""
    e = cfg.eval
    return Rerank(e.rerank_k1, e.rerank_k2, e.rerank_lambda) if e.rerank else None


def _distinct(samples) -> list[Sample]:
    return list(dict.fromkeys(samples))


class Evaluator(Protocol):
    """What the trainer selects checkpoints with: metrics of a model and a score to maximise."""

    def evaluate(self, model: TVIFM, stage: str) -> dict[str, dict[str, float]]:
        """``{query mode: metrics}`` of ``model`` trained up to ``stage``."""
        ...

    def score(self, val: dict[str, dict[str, float]]) -> tuple[float, ...]:
        """The selection score of :meth:`evaluate`'s result (higher is better)."""
        ...


@dataclass
class ValidationSet:
    """The validation evaluation used for checkpoint selection (validation identities only): the
    first protocol of the dataset, ``eval.val_trials`` gallery samplings, every mode the stage has."""

    name: str
    sets: dict[str, list[EvalSet]]
    text: TextIndex | None
    cfg: Config

    @classmethod
    def from_splits(cls, splits: DatasetSplits, text: TextIndex | None, cfg: Config) -> ValidationSet:
        """The validation set of ``splits`` (which must hold validation identities)."""
        if not splits.val_visible or not splits.val_ir:
            raise TvifmError(
                f"{splits.root}: no validation identities; checkpoint selection needs a validation split "
                "(SYSU-MM01 exp/val_id.txt, or data.val_fraction > 0 for datasets without one)"
            )
        all_sets = protocol_sets(
            splits.name,
            splits.val_visible,
            splits.val_ir,
            trials=cfg.eval.val_trials,
            seed=cfg.eval.seed,
            sampling=cfg.eval.sampling,
        )
        first = next(iter(all_sets))
        return cls(first, {first: all_sets[first]}, text, cfg)

    def modes(self, stage: str) -> tuple[str, ...]:
        """The IR-side query modes a model of ``stage`` is validated on."""
        if stage == "base" or self.text is None:
            return ("ir",)
        return IR_QUERY_MODES

    def evaluate(self, model: TVIFM, stage: str) -> dict[str, dict[str, float]]:
        """``{mode: metrics}`` on the validation identities."""
        return evaluate_model(model, self.sets, self.text, self.cfg, self.modes(stage))[self.name]

    def score(self, val: dict[str, dict[str, float]]) -> tuple[float, float]:
        """Selection score: (Rank-1, mAP) of the main query mode (:func:`~tvifm.models.query.main_mode`)."""
        mode = main_mode(val)
        return (val[mode]["rank1"], val[mode]["mAP"])
