"""Retrieval metrics and evaluation protocols.

:func:`evaluate` scores one distance matrix under the ``"sysu"``, ``"regdb"`` or ``"llcm"`` protocol;
the ``*_eval_sets`` builders derive the per-trial query/gallery sets of each dataset (galleries drawn by
:func:`sample_gallery`), and
:func:`evaluate_sets` averages the metrics over those trials.
"""

from tvifm.eval.metrics import (
    PROTOCOLS,
    EvaluationError,
    RetrievalResult,
    TrialSummary,
    evaluate,
    mean_results,
)
from tvifm.eval.protocols import (
    DIRECTIONS,
    DISTANCES,
    SAMPLINGS,
    Embedder,
    evaluate_sets,
    llcm_eval_sets,
    regdb_eval_sets,
    sample_gallery,
    sysu_eval_sets,
)

__all__ = [
    "DIRECTIONS",
    "DISTANCES",
    "PROTOCOLS",
    "SAMPLINGS",
    "Embedder",
    "EvaluationError",
    "RetrievalResult",
    "TrialSummary",
    "evaluate",
    "evaluate_sets",
    "llcm_eval_sets",
    "mean_results",
    "regdb_eval_sets",
    "sample_gallery",
    "sysu_eval_sets",
]
