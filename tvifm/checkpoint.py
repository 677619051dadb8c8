"""Checkpoint files as safetensors plus JSON, never pickles.

Weights are safetensors files; nested state (optimiser/scheduler ``state_dict``s) is split into a flat
tensor file and a JSON skeleton that refers to the tensors by key, so loading needs no unpickling. What
a run directory holds is :class:`tvifm.models.run.RunDir`'s business.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tvifm.errors import TvifmError

_TENSOR_REF = "__tensor__"


class CheckpointError(TvifmError):
    """A checkpoint is missing or does not match the model it should load into."""


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write the model's ``state_dict`` (contiguous, shared storage resolved) as safetensors."""
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    _atomic(Path(path), lambda tmp: save_file(state, str(tmp)))


def load_weights(model: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load safetensors weights into ``model``, with a clear error when the shapes or keys differ."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no model weights here; expected the weights written by training")
    state = load_file(str(path))
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the model built from its config: {exc}") from exc


def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested containers into a JSON-ready skeleton and a flat ``{key: tensor}`` mapping."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, key: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[key] = node.detach().contiguous().clone()
            return {_TENSOR_REF: key}
        if isinstance(node, dict):
            return {
                "__dict__": [
                    [walk(k, f"{key}.k{i}"), walk(v, f"{key}.{i}")] for i, (k, v) in enumerate(node.items())
                ]
            }
        if isinstance(node, list | tuple):
            items = [walk(v, f"{key}.{i}") for i, v in enumerate(node)]
            return {"__tuple__": items} if isinstance(node, tuple) else items
        if node is None or isinstance(node, bool | int | float | str):
            return node
        raise TypeError(f"cannot store {type(node).__name__} at {key or 'root'} in a checkpoint")

    return walk(obj, prefix or "s"), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if _TENSOR_REF in skeleton:
            return tensors[skeleton[_TENSOR_REF]]
        if "__dict__" in skeleton:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_state(state: dict[str, Any], directory: str | Path, name: str) -> None:
    """Save nested training state as ``name.safetensors`` + ``name.json`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    skeleton, tensors = flatten_state(state)
    _atomic(directory / f"{name}.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    write_json(directory / f"{name}.json", skeleton)


def load_state(directory: str | Path, name: str) -> dict[str, Any]:
    """Load state written by :func:`save_state`."""
    directory = Path(directory)
    skeleton = read_json(directory / f"{name}.json")
    tensors = load_file(str(directory / f"{name}.safetensors"))
    return unflatten_state(skeleton, tensors)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=False)))


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by the engine, with a clear error when it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing; is this a tvifm run directory?") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg}); the run directory is damaged") from exc


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory ``src`` over ``dst`` (the old ``dst`` is removed only after the move succeeds)."""
    old = dst.with_name(dst.name + ".old")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
