"""Deploy the retrieval service on Ray Serve and block until Ctrl-C (``tvifm serve``).

    python jobs/serve.py [--config SERVE_YAML] [--address ADDRESS|local] [--num-cpus N] [serve.key=value ...]
    python jobs/serve.py --print-config [--config SERVE_YAML] [serve.key=value ...]   # a serveConfigV2

See docs/serving.md for the ``serve.*`` settings.
"""

from __future__ import annotations

import sys

from tvifm.cli import job_main


def main(argv: list[str] | None = None) -> int:
    return job_main("serve", argv)


if __name__ == "__main__":
    sys.exit(main())
