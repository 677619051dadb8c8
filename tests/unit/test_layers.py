"""The layers of docs/design.md ("Layers"): which package of tvifm may import which.

An import anywhere in a module counts, also one inside a function: a lazy import still ties the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tvifm"
FOUNDATION = {"errors", "config", "checkpoint"}
CORE = FOUNDATION | {"data", "text", "models", "losses", "eval"}
# what each part of the package may import from tvifm (its own part always)
ALLOWED: dict[str, set[str]] = {
    **{name: FOUNDATION for name in FOUNDATION},
    **{name: CORE for name in CORE - FOUNDATION},
    "captioning": CORE | {"cluster"},
    "engine": CORE | {"cluster", "tracking"},
    "tracking": CORE,
    "serve": CORE | {"captioning"},
    "logs": FOUNDATION,
    "cluster": FOUNDATION | {"logs"},
}
EDGES_OF_EVERYTHING = {"cli", "pipeline", "experiments"}  # jobs and experiments compose every layer
# the documented exceptions: the config checks dataset names against the registry when it is loaded
EXCEPTIONS = {("tvifm.config.schema", "tvifm.data.registry")}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tvifm."):
            found.add(node.module)
            if node.module == "tvifm":
                found.update(f"tvifm.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "tvifm":
            found.update(f"tvifm.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tvifm."))
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_each_module_imports_only_the_layers_below_it(module: str, path: Path) -> None:
    part = _part(module)
    if part in EDGES_OF_EVERYTHING or part == "__init__":
        return
    assert part in ALLOWED, f"{module}: add its package to the layers of docs/design.md and this test"
    allowed = {part, *ALLOWED[part]}
    wrong = sorted(m for m in _imports(path) if _part(m) not in allowed and (module, m) not in EXCEPTIONS)
    assert wrong == [], f"{module} ({part}) may not import {wrong}; see docs/design.md, Layers"


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tvifm.engine.trainer import train\n    import tvifm.serve.api\n")
    assert _imports(bad) == {"tvifm.engine.trainer", "tvifm.serve.api"}
