"""Evaluate a model on a dataset's test split, every protocol and query mode (``tvifm evaluate``).

    python jobs/evaluate.py --model models:/tvifm@production [--dataset synth --root data/synthtri] [--json]
    python jobs/evaluate.py --model runs/ray/tiny-joint/export --mode ensemble --json
"""

from __future__ import annotations

import sys

from tvifm.cli import job_main


def main(argv: list[str] | None = None) -> int:
    return job_main("evaluate", argv)


if __name__ == "__main__":
    sys.exit(main())
