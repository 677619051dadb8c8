"""Run the whole tvifm pipeline on the embedded default (or a preset) (``tvifm pipeline``).

    python jobs/pipeline.py [--config PRESET_OR_YAML] [--verbose] [section.key=value ...]

The console shows the pipeline's stages, progress bars and results; Ray's, DeepSpeed's and MLflow's own
logs go to ``<out_dir>/logs/pipeline-<time>.log`` (printed at the start), or stay here with ``--verbose``.
"""

from __future__ import annotations

import sys

from tvifm.cli import job_main


def main(argv: list[str] | None = None) -> int:
    return job_main("pipeline", argv)


if __name__ == "__main__":
    sys.exit(main())
