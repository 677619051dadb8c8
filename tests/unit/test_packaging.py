"""Packaging: the core installs and works without the jobs' frameworks, and the extras cover every import.

The core (config, data, models, losses, eval, text, single-machine training) is what ``pip install tvifm``
gives; Ray, DeepSpeed, MLflow, FastAPI, transformers and pyarrow come with the extras ``train``,
``caption``, ``serve``, ``tracking`` and ``all``, which ``make setup`` and the image install.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
CORE_PACKAGES = ("tvifm.config", "tvifm.data", "tvifm.models", "tvifm.losses", "tvifm.eval", "tvifm.text")
CORE_MODULES = (
    "tvifm.checkpoint", "tvifm.errors", "tvifm.cli", "tvifm.logs",
    "tvifm.engine.trainer", "tvifm.engine.data", "tvifm.engine.schedule",
)  # fmt: skip
EDGE_FRAMEWORKS = {"ray", "deepspeed", "mlflow", "fastapi", "starlette"}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def _extra(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The distributions extra ``name`` installs, following ``tvifm[...]`` references."""
    out: set[str] = set()
    for text in PYPROJECT["optional-dependencies"][name]:
        req = Requirement(text)
        if _name(text) == "tvifm":
            for inner in req.extras - seen:
                out |= _extra(inner, seen | {name})
        else:
            out.add(_name(text))
    return out


def _core() -> set[str]:
    return {_name(text) for text in PYPROJECT["dependencies"]}


def _modules_of(distributions: set[str]) -> set[str]:
    """Top-level import names the installed ``distributions`` provide."""
    return {
        module
        for module, dists in packages_distributions().items()
        if {re.sub(r"[-_.]+", "-", d).lower() for d in dists} & distributions
    }


def _core_files() -> list[Path]:
    files = [p for pkg in CORE_PACKAGES for p in (REPO / pkg.replace(".", "/")).rglob("*.py")]
    return files + [REPO / (m.replace(".", "/") + ".py") for m in CORE_MODULES]


def _third_party(tree: ast.AST | list[ast.stmt], *, top_level: bool) -> set[str]:
    """Top-level names of the non-stdlib, non-tvifm modules imported (at module level only, or anywhere)."""
    nodes: list[ast.AST] = []
    if top_level:
        stack = list(tree) if isinstance(tree, list) else list(ast.iter_child_nodes(tree))
        while stack:
            node = stack.pop()
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue  # annotations only
            nodes.append(node)
            if isinstance(node, ast.If | ast.Try):
                stack.extend(ast.iter_child_nodes(node))
    else:
        nodes = list(ast.walk(tree))  # type: ignore[arg-type]
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "tvifm"}


# The child process: the extras' packages cannot be found (as if not installed), then the core is
# imported module by module, a tiny model trains one step and answers every query mode, and a job that
# needs Ray says which extra installs it.
CHILD = """
import importlib, json, pkgutil, sys

HIDDEN = set(json.loads(sys.argv[1]))


class Hidden:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None

    def __getattr__(self, attr):
        return getattr(self.finder, attr)


sys.meta_path[:] = [Hidden(f) for f in sys.meta_path]
for name in HIDDEN:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"{name} is still importable: the test's hiding does not work")

imported = []
for package in json.loads(sys.argv[2]):
    module = importlib.import_module(package)
    imported.append(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
for name in json.loads(sys.argv[3]):
    importlib.import_module(name)
    imported.append(name)

import torch
from tvifm.config import load_config
from tvifm.losses import ReIDLoss
from tvifm.models import create_model
from tvifm.models.query import QUERY_MODES

cfg = load_config("tiny", ["backbone.tiny_widths=[8, 8, 16, 16]", "text.context_length=32"])
model = create_model(cfg.backbone, cfg.text, 3, stage="joint", seed=0)
n = 4
batch = {
    "visible": torch.randn(n, 3, 64, 32), "ir": torch.randn(n, 3, 64, 32),
    "label": torch.tensor([0, 0, 1, 1]),
    "visible_text": ["a man in a red coat"] * n, "ir_text": ["a man in a coat"] * n,
}
streams = ["visible", "fusion", "visible_text"]
out = model(batch, streams)
loss = ReIDLoss(cfg.joint.loss)(out["features"], out["logits"], batch["label"].repeat(len(streams)))
loss["total"].backward()
model.eval()
image = model.encode_image(batch["ir"], "ir")
texts = model.encode_texts(batch["visible_text"])
captions = model.encode_texts(batch["ir_text"])
embeddings = model.query_embeddings(QUERY_MODES, image=image, description=texts, ir_caption=captions)

from tvifm.cluster import ray_session  # a job without its extra: a clear error, not a traceback
from tvifm.errors import TvifmError

try:
    with ray_session(1):
        pass
except TvifmError as err:
    missing = str(err)
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in HIDDEN)
print(json.dumps({
    "imported": imported, "loaded": loaded, "loss": float(loss["total"]), "missing": missing,
    "shapes": {mode: list(e.shape) for mode, e in embeddings.items()},
}))
"""


def test_the_core_imports_and_runs_without_any_extra_installed() -> None:
    extras = set().union(*(_extra(name) for name in PYPROJECT["optional-dependencies"] if name != "dev"))
    hidden = _modules_of(extras - _core()) | EDGE_FRAMEWORKS
    assert EDGE_FRAMEWORKS | {"transformers", "pyarrow"} <= hidden
    run = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(sorted(hidden)), json.dumps(CORE_PACKAGES),
         json.dumps(CORE_MODULES)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert {"tvifm.eval.offline", "tvifm.models.factory", "tvifm.data.storage"} <= set(report["imported"])
    assert report["loss"] > 0
    assert {mode: shape[0] for mode, shape in report["shapes"].items()} == dict.fromkeys(report["shapes"], 4)
    assert "Ray is not installed" in report["missing"] and "'tvifm[train]'" in report["missing"]


def test_core_modules_import_only_core_dependencies_at_module_level() -> None:
    allowed = _modules_of(_core())
    for path in _core_files():
        tree = ast.parse(path.read_text())
        extra = _third_party(tree.body, top_level=True) - allowed
        assert not extra, (
            f"{path.relative_to(REPO)} imports {sorted(extra)} at import time; move it into the function "
            "that needs it (docs/design.md, 'Layers')"
        )


def test_every_third_party_import_is_declared_and_all_installs_every_extra() -> None:
    extras = PYPROJECT["optional-dependencies"]
    all_ = _extra("all")
    for name in set(extras) - {"all", "dev"}:
        assert _extra(name) <= all_, f"tvifm[all] misses tvifm[{name}]'s {sorted(_extra(name) - all_)}"
    assert all_ <= _extra("dev"), "the test tools extra installs everything the tests exercise"
    declared = _modules_of(_core() | all_)
    for path in [*(REPO / "tvifm").rglob("*.py"), *(REPO / "jobs").glob("*.py")]:
        undeclared = _third_party(ast.parse(path.read_text()), top_level=False) - declared
        assert not undeclared, f"{path.relative_to(REPO)} imports {sorted(undeclared)}, in no extra"


def _project_extras(text: str, pattern: str) -> set[str]:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no `pip install` of the project matching {pattern!r}"
    return set().union(*(_extra(e.strip()) for e in match.group(1).split(",")))


def test_make_setup_and_the_image_install_every_extra() -> None:
    everything = set().union(*(_extra(name) for name in PYPROJECT["optional-dependencies"] if name != "dev"))
    make = _project_extras((REPO / "Makefile").read_text(), r"pip install .*-e '\.\[([\w,]+)\]'")
    assert everything <= make and _extra("dev") <= make, "README's `make run` / `make test` install all"
    image = _project_extras((REPO / "infra" / "Dockerfile").read_text(), r'pip install .*"\.\[([\w,]+)\]"')
    assert everything <= image
