"""Caption a dataset on Ray Data, or fine-tune its captioners first.

Usage::

    python jobs/caption.py --root DATASET_DIR [--config PRESET] [key=value ...]
    python jobs/caption.py finetune --root DATASET_DIR [--config PRESET] [--modality both|visible|ir]
                           [key=value ...]

``DATASET_DIR`` is a local folder or ``s3://bucket/prefix``. Overrides use the config's dotted keys; the
captioning settings are ``caption.*`` (e.g. ``caption.actors=2 caption.augmenter=rule``). Ray's own logs
go to ``<out_dir>/logs/caption-<time>.log`` (printed at the start); ``--verbose`` keeps them here.
"""

from __future__ import annotations

import argparse
import json
import sys

from tvifm.captioning.entry import caption_dataset, finetune_captioners
from tvifm.config import load_config
from tvifm.errors import TvifmError
from tvifm.logs import add_verbose_flag, log_dir, quiet_frameworks

MODALITIES = {"both": ("visible", "ir"), "visible": ("visible",), "ir": ("ir",)}


def _parser(finetune: bool) -> argparse.ArgumentParser:
    what = "fine-tune the RGB/IR captioners" if finetune else "caption every image with Ray Data"
    epilog = None if finetune else "fine-tune the captioners first: jobs/caption.py finetune --help"
    parser = argparse.ArgumentParser(
        prog="jobs/caption.py" + (" finetune" if finetune else ""), description=what, epilog=epilog
    )
    parser.add_argument("--root", required=True, help="dataset folder or s3://bucket/prefix")
    parser.add_argument("--config", default="tiny", help="preset name or YAML file (default: tiny)")
    if finetune:
        parser.add_argument("--modality", choices=sorted(MODALITIES), default="both")
    add_verbose_flag(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    finetune = bool(argv) and argv[0] == "finetune"
    args = _parser(finetune).parse_args(argv[1:] if finetune else argv)
    try:
        logs = log_dir(load_config(args.config, args.overrides).out_dir)
        with quiet_frameworks(logs, "caption-finetune" if finetune else "caption", verbose=args.verbose):
            if finetune:
                out: object = finetune_captioners(
                    args.root, args.config, args.overrides, MODALITIES[args.modality]
                )
            else:
                out = caption_dataset(args.root, args.config, args.overrides)
    except TvifmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
