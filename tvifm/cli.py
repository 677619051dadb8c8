"""The ``tvifm`` command line: ``tvifm data {synth,stats}`` and the stage commands of later steps.

Every subcommand parses its arguments and calls one library function; a :class:`~tvifm.errors.TvifmError`
is printed as ``error: ...`` with exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from tvifm.errors import TvifmError


def _cmd_synth(args: argparse.Namespace) -> int:
    from tvifm.data.synth import generate, parse_image_size

    summary = generate(args.root, ids=args.ids, seed=args.seed, image_size=parse_image_size(args.image_size))
    print(json.dumps(summary.to_dict(), indent=2))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from tvifm.data.stats import format_stats, stats_for

    stats = stats_for(args.dataset, args.root, trial=args.trial)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _dataset_choices() -> tuple[str, ...]:
    """The names ``--dataset`` accepts: the dataset registry's (imported when the parser is built)."""
    from tvifm.data.registry import dataset_names

    return dataset_names()


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="generate SynthTri, inspect installed datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    synth = dsub.add_parser("synth", help="write the SynthTri dataset (SYSU-MM01 layout + Tri- text)")
    synth.add_argument("--root", required=True, help="output directory")
    synth.add_argument("--ids", type=int, default=240, help="number of identities (default 240)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", default="96x48", help="HxW of the written images (default 96x48)")
    synth.set_defaults(func=_cmd_synth)
    stats = dsub.add_parser("stats", help="image, identity and caption counts of a dataset root")
    stats.add_argument(
        "--dataset", required=True, choices=_dataset_choices(), help="dataset layout of --root"
    )
    stats.add_argument("--root", required=True)
    stats.add_argument("--trial", type=int, default=1, help="RegDB split 1..10 (default 1)")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(func=_cmd_stats)


def _cmd_train(args: argparse.Namespace) -> int:
    from tvifm.config import load_config
    from tvifm.engine.trainer import train

    overrides = list(args.overrides)
    if args.root:
        overrides.append(f"data.root={args.root}")
    cfg = load_config(args.config, overrides)
    result = train(cfg, args.stage, args.out, init=args.init)
    summary = {"run_dir": str(result.run_dir), "best_epoch": result.best_epoch, "val": result.best_val}
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tvifm.eval.offline import evaluate_run, format_results

    report = evaluate_run(
        args.checkpoint,
        dataset=args.dataset,
        root=args.root,
        trial=args.trial,
        modes=args.mode,
        trials=args.trials,
        progress=not args.json,
    )
    print(json.dumps(report, indent=2) if args.json else format_results(report))
    return 0


def _add_stage_commands(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train stage 1 (base) or stage 2 (joint) on one machine")
    tr.add_argument("--stage", required=True, choices=("base", "joint"))
    tr.add_argument("--config", default="tiny", help="preset name (tiny, paper) or YAML file (default tiny)")
    tr.add_argument("--root", help="dataset directory (sets data.root)")
    tr.add_argument("--out", required=True, help="run directory (re-running into it resumes)")
    tr.add_argument("--init", help="base run directory to start stage 2 from")
    tr.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. base.epochs=5")
    tr.set_defaults(func=_cmd_train)
    ev = sub.add_parser("evaluate", help="test-split Rank-k/mAP/mINP of a run, per protocol and query mode")
    ev.add_argument("--checkpoint", required=True, help="run directory written by tvifm train")
    ev.add_argument(
        "--dataset",
        choices=_dataset_choices(),
        help="dataset to evaluate on (default: the run's training dataset)",
    )
    ev.add_argument("--root", help="dataset directory (default: the run's data.root)")
    ev.add_argument("--trial", type=int, help="RegDB split 1..10 (default: the run's)")
    ev.add_argument("--mode", action="append", help="ir, text, fusion, ensemble, rgb2ir (repeatable)")
    ev.add_argument("--trials", type=int, help="gallery samplings (default: eval.trials of the run)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_cmd_evaluate)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_data_commands, _add_stage_commands]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tvifm`` command."""
    parser = argparse.ArgumentParser(prog="tvifm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tvifm`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TvifmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
