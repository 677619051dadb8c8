#!/usr/bin/env python3
"""Regenerate the ``serveConfigV2`` of the RayService manifest from the command in its annotation.

    python infra/render_serve_config.py            # rewrite k8s/60-rayservice-retrieval.yaml in place
    python infra/render_serve_config.py --check    # exit 1 (and say so) when the manifest is out of date

The annotation ``tvifm.io/serve-config-command`` holds ``python jobs/serve.py --print-config key=value
...``; its output, verbatim (up to trailing blank lines), is the ``serveConfigV2`` block. Only that block
of the file changes (comments and layout elsewhere are kept). ``python`` in the command means this
interpreter.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "k8s" / "60-rayservice-retrieval.yaml"
ANNOTATION = "tvifm.io/serve-config-command"
KEY = "serveConfigV2"


def serve_command(manifest_text: str) -> list[str]:
    """The command of the annotation as an argument list."""
    doc = yaml.safe_load(manifest_text)
    command = doc["metadata"]["annotations"][ANNOTATION]
    argv = shlex.split(command)
    if argv[:3] != ["python", "jobs/serve.py", "--print-config"]:
        raise SystemExit(
            f"{ANNOTATION} must start with `python jobs/serve.py --print-config`, got {command!r}"
        )
    return argv


def generate(argv: list[str]) -> str:
    """Run the command from the repository root; returns its output, ending with one newline (as the
    manifest's literal block holds it)."""
    proc = subprocess.run(
        [sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed:\n{proc.stderr}")
    return proc.stdout.rstrip("\n") + "\n"


def replace_block(manifest_text: str, config: str) -> str:
    """``manifest_text`` with the literal block of ``serveConfigV2:`` replaced by ``config``."""
    lines = manifest_text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == f"{KEY}: |"]
    if len(starts) != 1:
        raise SystemExit(f"expected exactly one `{KEY}: |` line in the manifest, found {len(starts)}")
    start = starts[0]
    key_indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > key_indent
    ):
        end += 1
    pad = " " * (key_indent + 2)
    block = [f"{pad}{line}\n" if line else "\n" for line in config.rstrip("\n").split("\n")]
    return "".join([*lines[: start + 1], *block, *lines[end:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the manifest is current")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="the RayService manifest")
    args = parser.parse_args(argv)
    text = args.manifest.read_text()
    config = generate(serve_command(text))
    current = yaml.safe_load(text)["spec"][KEY]
    if args.check:
        if current == config:
            print(f"{args.manifest}: {KEY} is up to date")
            return 0
        print(f"{args.manifest}: {KEY} differs from the command's output; run infra/render_serve_config.py")
        return 1
    updated = replace_block(text, config)
    if yaml.safe_load(updated)["spec"][KEY] != config:
        raise SystemExit("internal error: the rewritten manifest does not hold the generated config")
    args.manifest.write_text(updated)
    print(f"{args.manifest}: {KEY} regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
