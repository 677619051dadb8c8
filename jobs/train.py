"""Train TVI-FM with Ray Train + DeepSpeed, track it in MLflow and register the model.

    ray job submit --address http://127.0.0.1:8265 -- python jobs/train.py [--config P] [key=value ...]
    python jobs/train.py [--config PRESET] [key=value ...]   # starts a local Ray (embedded default)

Re-running with the same ``dist.run_name`` resumes from the last checkpoint. Ray's, DeepSpeed's and
MLflow's own logs go to ``<out_dir>/logs/train-<time>.log`` (printed at the start); ``--verbose`` keeps
them on the console.
"""

from __future__ import annotations

import argparse
import json
import sys

from tvifm.config import load_config
from tvifm.engine.job import ray_session, tracking_session, train_job
from tvifm.errors import TvifmError
from tvifm.logs import add_verbose_flag, quiet_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train TVI-FM with Ray Train + DeepSpeed.")
    parser.add_argument("--config", default="tiny", help="preset name or YAML file (default: tiny)")
    parser.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation at the end")
    add_verbose_flag(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        with (
            quiet_job(cfg, "train", verbose=args.verbose),
            tracking_session(cfg) as uri,
            ray_session(cfg),
        ):
            result = train_job(cfg, uri, evaluate=not args.no_eval)
    except TvifmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {"run_name": result.run_name, "exports": result.exports, "mlflow_run_id": result.mlflow_run_id}
    if result.registration is not None:
        summary["registered"] = result.registration.__dict__
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
