"""Model sources of the service: run directories and the MLflow registry (``models:/name@alias``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tvifm.checkpoint import save_weights, write_json
from tvifm.config import load_config, save_config
from tvifm.config.loader import config_hash
from tvifm.models.factory import load_model
from tvifm.models.source import (
    ModelSourceError,
    parse_model_source,
    resolve_model,
)
from tvifm.models.tvifm import TVIFM

OVERRIDES = ["data.image_size=[64,32]", "backbone.tiny_widths=[16,16,32,32]", "text.context_length=32"]


def _run_dir(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = load_config("tiny", OVERRIDES)
    save_config(cfg, path)
    save_weights(TVIFM(cfg.backbone, cfg.text, num_classes=4), path / "model.safetensors")
    write_json(path / "meta.json", {"stage": "joint", "num_classes": 4})
    return path


@pytest.mark.parametrize(
    ("source", "name", "alias", "version"),
    [
        ("models:/tvifm@production", "tvifm", "production", None),
        ("models:/tvifm/12", "tvifm", None, "12"),
        ("runs/joint", None, None, None),
        ("s3://bucket/runs/joint", None, None, None),
    ],
)
def test_parse_sources(source: str, name: str | None, alias: str | None, version: str | None) -> None:
    ref = parse_model_source(source)
    assert (ref.name, ref.alias, ref.version, ref.is_registry) == (name, alias, version, name is not None)


@pytest.mark.parametrize(
    "source", ["models:/tvifm", "models:/tvifm/latest", "models:/a/b/c", "models:/@x", " "]
)
def test_malformed_sources_are_rejected(source: str) -> None:
    with pytest.raises(ModelSourceError):
        parse_model_source(source)


def test_checkpoint_directory_loads_with_identity(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run")
    loaded = load_model(run)
    model, info = loaded.model, loaded.info
    assert info.config_hash == config_hash(load_config("tiny", OVERRIDES))
    assert info.name is None and info.version is None and info.stage == "joint"
    assert info.dim == model.dim == 32 and info.image_size == [64, 32]
    other = _run_dir(tmp_path / "other", seed=1)
    assert load_model(other).info.fingerprint != info.fingerprint
    (run / "meta.json").unlink()
    with pytest.raises(ModelSourceError, match=r"missing meta\.json"):
        resolve_model(str(run))


@pytest.mark.slow
def test_registry_alias_resolves_to_version_and_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.pyfunc import PythonModel

    class Identity(PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return model_input

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("serve-test")
    run = _run_dir(tmp_path / "checkpoint")
    with mlflow.start_run():
        logged = mlflow.pyfunc.log_model(
            name="model",
            python_model=Identity(),
            artifacts={"checkpoint": str(run)},
            pip_requirements=[],
            registered_model_name="tvifm",
        )
    version = str(logged.registered_model_version)
    mlflow.MlflowClient().set_registered_model_alias("tvifm", "production", version)

    prod = resolve_model("models:/tvifm@production", uri)
    pinned = resolve_model(f"models:/tvifm/{version}", uri)
    try:
        assert (prod.version, prod.alias) == (version, "production")
        assert (pinned.version, pinned.alias) == (version, "production")
        info = load_model("models:/tvifm@production", tracking_uri=uri).info
        assert (info.name, info.version, info.alias) == ("tvifm", version, "production")
        assert info.fingerprint == load_model(run).info.fingerprint
        with pytest.raises(ModelSourceError, match="staging"):
            resolve_model("models:/tvifm@staging", uri)
    finally:
        shutil.rmtree(prod.run_dir.parent.parent, ignore_errors=True)
