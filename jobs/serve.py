"""Deploy the retrieval service on Ray Serve and block until Ctrl-C.

Usage::

    python jobs/serve.py [--config SERVE_YAML] [--address ADDRESS|local] [--num-cpus N] [key=value ...]
    python jobs/serve.py --print-config [--config SERVE_YAML] [key=value ...]   # a RayService serveConfigV2

Connects to ``--address`` (or ``RAY_ADDRESS``, or a running local cluster) and otherwise starts a local
Ray; prints the service URL; on Ctrl-C/SIGTERM removes the application and stops what it started.
Settings are ``ServeConfig`` fields (``model=runs/joint gallery_uri=s3://bucket/gallery port=8000``);
see docs/serving.md.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from tvifm.errors import TvifmError
from tvifm.serve.app import run_service, service_config
from tvifm.serve.config import load_serve_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/serve.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file of serve settings (top level or a 'serve:' section)")
    parser.add_argument("--address", help="Ray address to connect to, or 'local' to start a new local Ray")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started by this job")
    parser.add_argument("--print-config", action="store_true", help="print a Serve config YAML and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    try:
        cfg = load_serve_config(args.config, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(service_config(cfg), sort_keys=False))
            return 0
        run_service(cfg, address=args.address, num_cpus=args.num_cpus)
    except TvifmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
