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
                               "text.checkpoint=weights/clip.pt"])  # fmt: skip
    out = absolute_paths(cfg)
    assert out.data.root == os.path.join(str(tmp_path), "data", "synthtri")
    assert out.text.checkpoint == os.path.join(str(tmp_path), "weights", "clip.pt")
    assert out.dist.storage_path == "s3://bucket/ray" and out.backbone.weights is None
    assert cfg.data.root == "data/synthtri", "the caller's config is left as it was"


def test_every_path_field_of_the_config_is_made_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config("tiny", ["caption.llm_checkpoint=models/llm", "serve.ir_captioner=runs/captioners/ir",
                               "caption.output=s3://bucket/captions"])  # fmt: skip
    out = absolute_paths(cfg)
    assert out.caption.captioner_dir == os.path.join(str(tmp_path), "runs", "captioners")
    assert out.caption.llm_checkpoint == os.path.join(str(tmp_path), "models", "llm")
    assert out.serve.ir_captioner == os.path.join(str(tmp_path), "runs", "captioners", "ir")
    assert out.serve.gallery_uri == os.path.join(str(tmp_path), "runs", "gallery")
    assert out.caption.output == "s3://bucket/captions" and out.serve.model == cfg.serve.model


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
