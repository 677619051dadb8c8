"""The TVI-FM ablation on SynthTri (tiny preset, fixed seeds): each component's contribution.

Rows (as in the paper's ablation; :mod:`tvifm.experiments.ablation`): IR baseline, + fusion, + joint
learning, + ensemble retrieval, + text augmentation. Every stage-2 training is an experiment preset
``tvifm/experiments/presets/ablation-<variant>.yaml`` extending ``ablation.yaml`` (the ablation's longer
schedule: stage 1 trains 40 epochs, stage 2 36, chosen on the validation identities), which extends
``tiny``; the 12-epoch ``*-12`` runs and all five streams are validation-only candidates.

Columns: Rank-1 / mAP / mINP for SYSU-protocol all-search and indoor-search (single-shot, 10 gallery
trials), mean and standard deviation over seeds. Checkpoints are selected on the validation identities.
Writes ``docs/ablation.md`` and ``docs/ablation_cmc.png``; with ``--tracking`` every (row, seed) is also
an MLflow run of the experiment ``tvifm-ablation`` (an embedded server unless MLFLOW_TRACKING_URI is set).

    python benchmarks/ablation.py [--seeds 0 1 2] [--out runs/ablation] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tvifm.config.schema import Config
from tvifm.errors import TvifmError
from tvifm.experiments import ablation as abl
from tvifm.experiments import diagnostics as diag

ROOT = Path(__file__).resolve().parents[1]
# the published Tri-RegDB captions, when ../shared is beside the repository (rephrasing figures)
TRI_REGDB = ROOT.parent / "shared" / "data" / "tri-captions" / "regdb" / "Text" / "Blip_RGB"


def seed_figures(runs: dict[str, Path]) -> tuple[dict[str, float], dict[str, float]]:
    """One seed's validation diagnosis: the MER term sums, and every other figure the page reports."""
    choices = {
        **diag.choice_figures(runs, abl.STREAM_CHOICE),
        **diag.choice_figures(runs, abl.SCHEDULE_CHOICE),
        **diag.final_losses(runs, abl.SCHEDULE_CHOICE),
    }
    figures = {**diag.stage1_figures(runs["base"]), **diag.late_gains(runs, abl.LATE), **choices}
    return diag.mer_terms(runs["joint"]), figures


def run(cfg: Config, seeds: list[int], out: Path) -> dict[str, Any]:
    """Train (or reuse) and evaluate every seed; returns the rows and validation figures per seed."""
    per_seed, cmcs, terms, figures = [], {row.name: [] for row in abl.ROWS}, [], []
    for seed in seeds:
        runs = abl.train_seed(cfg, seed, out)
        results = abl.evaluate_rows(runs)
        per_seed.append(results)
        mer, others = seed_figures(runs)
        terms.append(mer)
        figures.append(others)
        for row in abl.ROWS:
            cmcs[row.name].append(results[row.name]["all-single"]["cmc"])
        print(
            f"seed {seed}: " + json.dumps({r: results[r]["all-single"]["rank1"] for r in results}), flush=True
        )
    return {"results": per_seed, "cmcs": cmcs, "mer_terms_val": terms, "validation_figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--tracking", action="store_true", help="log every (row, seed) to MLflow")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    from tvifm.experiments.ablation_page import markdown
    from tvifm.experiments.captions import rephrasing_figures

    try:
        cfg = abl.ablation_config(args.config, args.overrides)
        out = Path(args.out)
        start = time.time()
        abl.prepare_data(cfg)
        done = run(cfg, args.seeds, out)
    except TvifmError as err:
        raise SystemExit(f"error: {err}") from err
    table = abl.summarise(done["results"])
    minutes = (time.time() - start) / 60
    diagnosis = {
        **abl.summarise_figures(done["mer_terms_val"]),
        **abl.summarise_figures(done["validation_figures"]),
    }
    novelty = rephrasing_figures(cfg, TRI_REGDB)
    captioned = abl.load_captioned(out / "captioned" / "ablation.json")
    trained = abl.train_minutes(out, args.seeds)
    text = markdown(table, diagnosis, args.seeds, cfg, minutes, trained, novelty, captioned)
    print(text)
    saved = {"seeds": args.seeds, **{k: done[k] for k in ("results", "mer_terms_val", "validation_figures")}}
    (out / "ablation.json").write_text(json.dumps(saved, indent=2))
    if not args.no_docs:
        (ROOT / "docs" / "ablation.md").write_text(text)
        abl.plot_rows_cmc(done["cmcs"], ROOT / "docs" / "ablation_cmc.png")
    if args.tracking:
        from tvifm.engine.job import tracking_session

        with tracking_session(cfg) as uri:
            if uri:
                abl.log_to_mlflow(uri, done["results"], args.seeds, cfg)


if __name__ == "__main__":
    main()
