"""Train TVI-FM with Ray Train + DeepSpeed, track it in MLflow and register the model (``tvifm train``).

    ray job submit --address http://127.0.0.1:8265 -- python jobs/train.py [--config P] [key=value ...]
    python jobs/train.py [--config PRESET] [section.key=value ...]   # starts a local Ray (embedded default)

Re-running with the same ``dist.run_name`` resumes from the last checkpoint. ``--help`` lists the options.
"""

from __future__ import annotations

import sys

from tvifm.cli import job_main


def main(argv: list[str] | None = None) -> int:
    return job_main("train", argv)


if __name__ == "__main__":
    sys.exit(main())
