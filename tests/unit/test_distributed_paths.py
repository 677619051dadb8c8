"""Ray Train runs each worker in a directory of its own: the driver hands workers absolute paths."""

from __future__ import annotations

import dataclasses
import os
import re

from tvifm.config import load_config
from tvifm.config.schema import Config
from tvifm.engine.distributed import absolute_paths


def test_relative_local_paths_become_absolute_and_remote_ones_stay(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config("tiny", ["data.root=data/synthtri", "dist.storage_path=s3://bucket/ray",
                               "text.checkpoint=weights/clip.pt", "caption.llm_checkpoint=models/llm",
                               "serve.ir_captioner=runs/captioners/ir"])  # fmt: skip
    out = absolute_paths(cfg)

    def here(*parts: str) -> str:
        return os.path.join(str(tmp_path), *parts)

    assert (out.data.root, out.text.checkpoint) == (here("data", "synthtri"), here("weights", "clip.pt"))
    assert out.caption.llm_checkpoint == here("models", "llm")  # every declared path, in every section
    assert out.caption.captioner_dir == here("runs", "captioners")
    assert (out.serve.ir_captioner, out.serve.gallery_uri) == (
        here("runs", "captioners", "ir"),
        here("runs", "gallery"),
    )
    assert out.dist.storage_path == "s3://bucket/ray" and out.backbone.weights is None
    assert out.serve.model == cfg.serve.model  # a registry URI, not a path
    assert cfg.data.root == "data/synthtri", "the caller's config is left as it was"


PATH_NAME = re.compile(r"(root|_path|checkpoint|weights|_dir|output|captioner|gallery_uri)$")


def test_fields_named_like_paths_are_declared_paths() -> None:
    """A new path field must be declared with ``_path(...)`` or Ray Train workers will not find it."""
    undeclared = []

    def walk(section: object, prefix: str) -> None:
        for f in dataclasses.fields(section):  # type: ignore[arg-type]
            value = getattr(section, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            elif PATH_NAME.search(f.name) and not f.metadata.get("path"):
                undeclared.append(prefix + f.name)

    walk(Config(), "")
    assert not undeclared, f"declare these with _path(...) in tvifm/config/schema.py: {undeclared}"
