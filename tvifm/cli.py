"""The ``tvifm`` command line: one subcommand per job, each parsing its settings and calling one library
function. ``jobs/*.py`` are the same commands (``python jobs/train.py ...`` is ``tvifm train ...``), so a
job has one implementation whichever way it is started.

Settings come from a preset (``--config``: a name or a YAML file) plus ``section.key=value`` overrides, in
every command. A :class:`~tvifm.errors.TvifmError` is printed as ``error: ...`` with exit status 2 instead
of a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tvifm.errors import TvifmError


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _config(args: argparse.Namespace, extra: Sequence[str] = ()) -> Any:
    from tvifm.config import load_config

    return load_config(args.config, [*extra, *args.overrides])


def _settings(parser: argparse.ArgumentParser, preset: bool = True, verbose: bool = False) -> None:
    """``--config`` and the trailing ``section.key=value`` overrides every job takes (and ``--verbose``,
    for jobs that run Ray, DeepSpeed or MLflow: their logs on the console instead of in a file)."""
    if verbose:
        from tvifm.logs import add_verbose_flag

        add_verbose_flag(parser)
    if preset:
        parser.add_argument(
            "--config", default="tiny", help="preset name (tiny, paper) or YAML file (default: tiny)"
        )
    parser.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="settings, e.g. data.root=DIR base.epochs=5"
    )


# -- data -----------------------------------------------------------------------------------------------
def _cmd_synth(args: argparse.Namespace) -> int:
    from tvifm.data.synth import generate, parse_image_size

    summary = generate(args.root, ids=args.ids, seed=args.seed, image_size=parse_image_size(args.image_size))
    _print_json(summary.to_dict())
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from tvifm.data.stats import format_stats, stats_for

    stats = stats_for(args.dataset, args.root, trial=args.trial)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _cmd_gallery_audit(args: argparse.Namespace) -> int:
    from tvifm.data.registry import gallery_sampling
    from tvifm.eval.audit import audit_paths, audit_trial, format_audit

    eval_set = audit_trial(
        args.dataset,
        args.root,
        args.trial,
        search=args.search,
        shot=args.shot,
        sampling=args.sampling,
        seed=args.seed,
    )
    if args.json:
        _print_json(audit_paths(eval_set))
    else:
        print(format_audit(eval_set, str(gallery_sampling(args.dataset, args.sampling))))
    return 0


def _dataset_names() -> tuple[str, ...]:
    """The names ``--dataset`` accepts: the dataset registry's (imported when the parser is built)."""
    from tvifm.data.registry import dataset_names

    return dataset_names()


def _sampling_settings() -> tuple[str, ...]:
    """The values ``--sampling`` accepts (``eval.sampling``'s)."""
    from tvifm.data.registry import SAMPLING_SETTINGS

    return SAMPLING_SETTINGS


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data", help="generate SynthTri, inspect installed datasets, list a trial's evaluation images"
    )
    dsub = data.add_subparsers(dest="data_command", required=True)
    synth = dsub.add_parser("synth", help="write the SynthTri dataset (SYSU-MM01 layout + Tri- text)")
    synth.add_argument("--root", required=True, help="output directory")
    synth.add_argument("--ids", type=int, default=240, help="number of identities (default 240)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", default="96x48", help="HxW of the written images (default 96x48)")
    synth.set_defaults(func=_cmd_synth)
    stats = dsub.add_parser("stats", help="image, identity and caption counts of a dataset root")
    stats.add_argument("--dataset", required=True, choices=_dataset_names(), help="dataset layout of --root")
    stats.add_argument("--root", required=True)
    stats.add_argument("--trial", type=int, default=1, help="RegDB split 1..10 (default 1)")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(func=_cmd_stats)
    _add_data_gallery(dsub)


def _add_data_gallery(dsub: argparse._SubParsersAction) -> None:
    from tvifm.eval.audit import AUDIT_DATASETS

    gal = dsub.add_parser(
        "gallery",
        help="the query and gallery images of one evaluation trial (to audit the gallery sampling)",
        description="The images one trial of the test evaluation uses in the default direction (IR "
        "queries, visible gallery), drawn as the evaluation draws them. --json prints "
        '{"query": [paths], "gallery": [paths]} with paths relative to --root. See docs/design.md, '
        '"Gallery sampling".',
    )
    gal.add_argument("--dataset", required=True, choices=AUDIT_DATASETS, help="dataset layout of --root")
    gal.add_argument("--root", required=True)
    gal.add_argument("--trial", type=int, required=True, help="trial number (the standard code's: 0..9)")
    gal.add_argument("--search", choices=("all", "indoor"), help="SYSU-MM01 only (default all)")
    gal.add_argument("--shot", choices=("single", "multi"), help="SYSU-MM01 only (default single)")
    gal.add_argument(
        "--sampling", choices=_sampling_settings(), default="auto",
        help="standard (the published code's draws), seeded, or auto: the dataset's own (default)",
    )  # fmt: skip
    gal.add_argument("--seed", type=int, help="eval.seed of seeded sampling (default 0)")
    gal.add_argument("--json", action="store_true", help="print one JSON object")
    gal.set_defaults(func=_cmd_gallery_audit)


# -- captioning -----------------------------------------------------------------------------------------
MODALITIES = {"both": ("visible", "ir"), "visible": ("visible",), "ir": ("ir",)}


def _cmd_caption(args: argparse.Namespace) -> int:
    from tvifm.captioning.job import run_caption_job
    from tvifm.logs import log_dir, quiet_frameworks

    cfg = _config(args)
    with quiet_frameworks(log_dir(cfg.out_dir), "caption", verbose=args.verbose):
        result = run_caption_job(args.root, cfg.caption, dataset=cfg.data.dataset)
    _print_json(result.to_dict())
    return 0


def _cmd_caption_finetune(args: argparse.Namespace) -> int:
    from tvifm.captioning.finetune import finetune
    from tvifm.logs import log_dir, quiet_frameworks

    cfg = _config(args)
    with quiet_frameworks(log_dir(cfg.out_dir), "caption-finetune", verbose=args.verbose):
        results = finetune(args.root, cfg, cfg.caption, MODALITIES[args.modality])
    _print_json([r.to_dict() for r in results])
    return 0


def _add_caption(sub: argparse._SubParsersAction) -> None:
    cap = sub.add_parser(
        "caption",
        help="caption every image of a dataset with Ray Data (jobs/caption.py)",
        epilog="fine-tune the captioners first: tvifm caption-finetune --help",
    )
    cap.add_argument("--root", required=True, help="dataset folder or s3://bucket/prefix")
    _settings(cap, verbose=True)
    cap.set_defaults(func=_cmd_caption)
    ft = sub.add_parser("caption-finetune", help="fine-tune the RGB/IR captioners (jobs/caption.py finetune)")
    ft.add_argument("--root", required=True, help="dataset folder or s3://bucket/prefix")
    ft.add_argument("--modality", choices=sorted(MODALITIES), default="both")
    _settings(ft, verbose=True)
    ft.set_defaults(func=_cmd_caption_finetune)


# -- training -------------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    cfg = _config(args, [f"data.root={args.root}"] if args.root else [])
    if args.local:
        return _train_local(cfg, args)
    from tvifm.engine.job import tracking_session, train_job, training_cluster
    from tvifm.logs import quiet_job

    with quiet_job(cfg, "train", verbose=args.verbose), tracking_session(cfg) as uri, training_cluster(cfg):
        result = train_job(cfg, uri, evaluate=not args.no_eval)
    summary: dict[str, Any] = {
        "run_name": result.run_name,
        "exports": result.exports,
        "mlflow_run_id": result.mlflow_run_id,
    }
    if result.registration is not None:
        summary["registered"] = result.registration.__dict__
    _print_json(summary)
    return 0


def _train_local(cfg: Any, args: argparse.Namespace) -> int:
    from tvifm.engine.trainer import train

    if not (args.stage and args.out):
        raise TvifmError("--local trains one stage into a folder: give --stage base|joint and --out DIR")
    result = train(cfg, args.stage, args.out, init=args.init)
    _print_json({"run_dir": str(result.run_dir), "best_epoch": result.best_epoch, "val": result.best_val})
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser(
        "train",
        help="train both stages with Ray Train + DeepSpeed, track and register (jobs/train.py)",
        description="Train TVI-FM with Ray Train + DeepSpeed (dist.*), evaluate on the test split, log "
        "to MLflow and register the model; re-running with the same dist.run_name resumes. With --local, "
        "train one stage on this machine into --out without Ray or tracking.",
    )
    tr.add_argument("--root", help="dataset directory (sets data.root)")
    tr.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation at the end")
    tr.add_argument("--local", action="store_true", help="one stage on this machine, no Ray, no tracking")
    tr.add_argument("--stage", choices=("base", "joint"), help="with --local: the stage to train")
    tr.add_argument("--out", help="with --local: run directory (re-running into it resumes)")
    tr.add_argument("--init", help="with --local --stage joint: the base run directory to start from")
    _settings(tr, verbose=True)
    tr.set_defaults(func=_cmd_train)


# -- evaluation -----------------------------------------------------------------------------------------
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tvifm.eval.offline import evaluate_run, format_results
    from tvifm.models.source import resolve_model

    run_dir = resolve_model(args.model, args.tracking_uri).run_dir
    report = evaluate_run(
        run_dir,
        dataset=args.dataset,
        root=args.root,
        trial=args.trial,
        modes=args.mode,
        trials=args.trials,
        sampling=args.sampling,
        rerank=args.rerank,
        progress=not args.json,
    )
    report["model"] = args.model
    print(json.dumps(report, indent=2) if args.json else format_results(report))
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "evaluate", help="test-split Rank-k/mAP/mINP per protocol and query mode (jobs/evaluate.py)"
    )
    ev.add_argument(
        "--model", "--checkpoint", dest="model", required=True,
        help="run directory, s3:// URI or models:/<name>@<alias> | models:/<name>/<version>",
    )  # fmt: skip
    ev.add_argument("--tracking-uri", help="MLflow server for models:/ URIs (default: MLFLOW_TRACKING_URI)")
    ev.add_argument("--dataset", choices=_dataset_names(), help="default: the model's training dataset")
    ev.add_argument("--root", help="dataset directory (default: the model's data.root)")
    ev.add_argument("--trial", type=int, help="RegDB split 1..10 (default: the model's)")
    ev.add_argument("--mode", action="append", help="ir, text, fusion, ensemble, rgb2ir (repeatable)")
    ev.add_argument("--trials", type=int, help="gallery samplings (default: the model's eval.trials)")
    ev.add_argument(
        "--sampling", choices=_sampling_settings(),
        help="gallery draws: standard, seeded or auto (default: the model's eval.sampling)",
    )  # fmt: skip
    ev.add_argument(
        "--rerank", action=argparse.BooleanOptionalAction, default=None,
        help="k-reciprocal re-ranking (eval.rerank_k1/k2/lambda of the model; default: its eval.rerank)",
    )  # fmt: skip
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_cmd_evaluate)


# -- serving --------------------------------------------------------------------------------------------
def _cmd_serve(args: argparse.Namespace) -> int:
    import yaml

    from tvifm.serve.app import run_service, service_config
    from tvifm.serve.config import load_serve_config

    cfg = load_serve_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(service_config(cfg), sort_keys=False))
        return 0
    run_service(cfg, address=args.address, num_cpus=args.num_cpus)
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser(
        "serve",
        help="deploy the retrieval service on Ray Serve until Ctrl-C (jobs/serve.py)",
        description="Connects to --address (or RAY_ADDRESS, or a running local cluster), otherwise starts a "
        "local Ray; prints the service URL; on Ctrl-C/SIGTERM removes the application and stops what it "
        "started. Settings are serve.* keys (serve.model=runs/joint serve.port=8000); see docs/serving.md.",
    )
    sv.add_argument("--config", help="YAML file of serve settings (a 'serve:' section or top-level keys)")
    sv.add_argument("--address", help="Ray address to connect to, or 'local' to start a new local Ray")
    sv.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started by this job")
    sv.add_argument("--print-config", action="store_true", help="print a RayService serveConfigV2 and exit")
    _settings(sv, preset=False)
    sv.set_defaults(func=_cmd_serve)


# -- gallery housekeeping -------------------------------------------------------------------------------
def _cmd_gallery(args: argparse.Namespace) -> int:
    from tvifm.serve.gallery import check_gallery, repair_gallery

    run = repair_gallery if args.gallery_command == "repair" else check_gallery
    report = run(args.uri, endpoint=args.s3_endpoint, grace_s=args.grace_seconds)
    _print_json(report.to_dict())
    return 0 if report.ok else 1


def _add_gallery(sub: argparse._SubParsersAction) -> None:
    gal = sub.add_parser(
        "gallery",
        help="check or repair the retrieval service's stored gallery",
        description="check: compare the manifest with the segment files (existence, row counts, SHA-256 "
        "digests) and the stored images, list orphaned files; changes nothing. repair: rewrite an "
        "inconsistent gallery from what can be trusted and delete orphaned files older than the grace "
        "period. Both print a JSON report; exit status 1 when the gallery is (still) inconsistent. See "
        "docs/operations.md.",
    )
    gsub = gal.add_subparsers(dest="gallery_command", required=True)
    for name, text in (("check", "report problems and orphans"), ("repair", "fix what can be fixed")):
        cmd = gsub.add_parser(name, help=text)
        cmd.add_argument("--uri", required=True, help="the gallery: folder or s3://bucket/prefix")
        cmd.add_argument("--s3-endpoint", help="S3 endpoint URL (default: AWS_ENDPOINT_URL[_S3] or AWS)")
        cmd.add_argument(
            "--grace-seconds", type=float, default=3600.0,
            help="unreferenced files younger than this may belong to a write in progress (default 3600)",
        )  # fmt: skip
        cmd.set_defaults(func=_cmd_gallery)


# -- the main job ---------------------------------------------------------------------------------------
def _cmd_pipeline(args: argparse.Namespace) -> int:
    from tvifm.logs import quiet_job
    from tvifm.pipeline import run_pipeline

    cfg = _config(args)
    with quiet_job(cfg, "pipeline", verbose=args.verbose):
        run_pipeline(cfg)
    return 0


def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser(
        "pipeline",
        help="every stage end to end on the embedded default or a preset (jobs/pipeline.py)",
        description="The console shows the pipeline's stages, progress bars and results; Ray's, "
        "DeepSpeed's and MLflow's own logs go to <out_dir>/logs/pipeline-<time>.log (printed at the "
        "start), or stay on the console with --verbose.",
    )
    _settings(pl, verbose=True)
    pl.set_defaults(func=_cmd_pipeline)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_data, _add_caption, _add_train, _add_evaluate, _add_serve, _add_pipeline, _add_gallery,
]  # fmt: skip


def build_parser(prog: str = "tvifm") -> argparse.ArgumentParser:
    """The argument parser of the ``tvifm`` command."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tvifm`` console script and of ``jobs/*.py``."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TvifmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def job_main(command: str, argv: Sequence[str] | None = None) -> int:
    """``python jobs/<command>.py ARGS`` is ``tvifm <command> ARGS``."""
    return main([command, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
