"""Experiments on top of the library: the ablation's presets, training orchestration and summaries
(:mod:`~tvifm.experiments.ablation`), diagnostics of trained runs on their validation identities
(:mod:`~tvifm.experiments.diagnostics`), caption scoring and rephrasing figures
(:mod:`~tvifm.experiments.captions`), the Markdown they are reported in (:mod:`~tvifm.experiments.render`,
:mod:`~tvifm.experiments.ablation_page`, :mod:`~tvifm.experiments.docs`) and the service's load test
(:mod:`~tvifm.experiments.loadtest`).

The scripts in ``benchmarks/`` are thin command lines over these modules; variants of an experiment are
YAML presets in ``tvifm/experiments/presets`` (:mod:`~tvifm.experiments.presets`). Nothing is imported
here: import the module you need.
"""
