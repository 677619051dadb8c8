"""Run the whole tvifm pipeline on the embedded default (or a preset): ``python jobs/pipeline.py``.

Usage: ``python jobs/pipeline.py [--config PRESET_OR_YAML] [--verbose] [key=value ...]``

The console shows the pipeline's stages, progress bars and results; Ray's, DeepSpeed's and MLflow's own
logs go to ``<out_dir>/logs/pipeline-<time>.log`` (printed at the start), or stay here with ``--verbose``.
"""

from __future__ import annotations

import argparse
import sys

from tvifm.config import load_config
from tvifm.errors import TvifmError
from tvifm.logs import add_verbose_flag, quiet_job
from tvifm.pipeline import run_pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", help="preset name or YAML file (default: tiny)")
    add_verbose_flag(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        with quiet_job(cfg, "pipeline", verbose=args.verbose):
            run_pipeline(cfg)
    except TvifmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
