"""Caption a dataset on Ray Data, or fine-tune its captioners first (``tvifm caption``,
``tvifm caption-finetune``).

    python jobs/caption.py --root DATASET_DIR [--config PRESET] [section.key=value ...]
    python jobs/caption.py finetune --root DATASET_DIR [--config PRESET] [--modality both|visible|ir] [...]

``DATASET_DIR`` is a local folder or ``s3://bucket/prefix``; the captioning settings are ``caption.*``
(e.g. ``caption.actors=2 caption.augmenter=rule``).
"""

from __future__ import annotations

import sys

from tvifm.cli import main as cli


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["finetune"]:
        return cli(["caption-finetune", *argv[1:]])
    return cli(["caption", *argv])


if __name__ == "__main__":
    sys.exit(main())
