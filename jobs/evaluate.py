"""Evaluate a model on a dataset's test split: every protocol and query mode, trial-averaged.

python jobs/evaluate.py --model models:/tvifm@production [--dataset synth --root data/synthtri] [--json]
python jobs/evaluate.py --model runs/ray/tiny-joint/export --mode ensemble --json
"""

from __future__ import annotations

import argparse
import json
import sys

from tvifm.tracking.model_source import resolve_model

from tvifm.data.registry import dataset_names
from tvifm.errors import TvifmError
from tvifm.eval.offline import evaluate_run, format_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a TVI-FM model on a test split.")
    parser.add_argument("--model", required=True, help="run directory or models:/<name>@<alias> URI")
    parser.add_argument(
        "--tracking-uri", help="MLflow server for models:/ URIs (default: MLFLOW_TRACKING_URI)"
    )
    parser.add_argument(
        "--dataset",
        choices=dataset_names(),
        help="dataset to evaluate on (default: the model's training data)",
    )
    parser.add_argument("--root", help="dataset directory (default: the model's data.root)")
    parser.add_argument("--trial", type=int, help="RegDB split 1..10")
    parser.add_argument("--mode", action="append", help="ir, text, fusion, ensemble, rgb2ir (repeatable)")
    parser.add_argument("--trials", type=int, help="gallery samplings (default: the model's eval.trials)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        run_dir = resolve_model(args.model, args.tracking_uri).run_dir
        report = evaluate_run(
            run_dir,
            dataset=args.dataset,
            root=args.root,
            trial=args.trial,
            modes=args.mode,
            trials=args.trials,
            progress=not args.json,
        )
    except TvifmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["model"] = args.model
    print(json.dumps(report, indent=2) if args.json else format_results(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
