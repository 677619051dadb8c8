"""Docs pages the benchmark scripts write: one ``## <title>`` section of a Markdown page rewritten in place
(``docs/benchmarks.md``, ``docs/captioning.md``), every other section left as it is."""

from __future__ import annotations

import re
from pathlib import Path

DOC_INTRO = (
    "# Benchmarks\n\n"
    "Measured numbers of the tvifm benchmark scripts in `benchmarks/`. Each section is written by the\n"
    "script named in it; re-run the script to refresh its section.\n"
)


def write_section(path: Path, title: str, body: str) -> None:
    """Replace the section headed ``## {title}`` (up to the next ``## `` heading) of the Markdown file at
    ``path`` with ``body``, or append it (to a new benchmarks page when there is no file); every other
    section is left as it is."""
    heading = f"## {title}"
    text = f"{heading}\n\n{body.strip()}\n"
    current = path.read_text(encoding="utf-8") if path.exists() else DOC_INTRO
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")
