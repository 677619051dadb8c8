"""Run the whole tvifm pipeline on the embedded default (or a preset): ``python jobs/pipeline.py``.

Usage: ``python jobs/pipeline.py [--config PRESET_OR_YAML] [key=value ...]``
"""

from __future__ import annotations

import argparse
import sys

from tvifm.config import load_config
from tvifm.errors import TvifmError
from tvifm.pipeline import run_pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", help="preset name or YAML file (default: tiny)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    try:
        run_pipeline(load_config(args.config, args.overrides))
    except TvifmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
