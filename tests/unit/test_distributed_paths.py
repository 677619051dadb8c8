"""Ray Train runs each worker in a directory of its own: the driver hands workers absolute paths."""

from __future__ import annotations

import os

from tvifm.config import load_config
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
