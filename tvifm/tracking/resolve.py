"""Turn a model reference into a local run directory: a path, or an MLflow ``models:/`` URI."""

from __future__ import annotations

from pathlib import Path

from tvifm.errors import TvifmError

CHECKPOINT_ARTIFACT = "checkpoint"


def is_model_uri(ref: str) -> bool:
    """True for ``models:/<name>@<alias>`` and ``models:/<name>/<version>``."""
    return ref.startswith("models:/")


def local_checkpoint(ref: str, tracking_uri: str | None = None, dest: str | Path | None = None) -> Path:
    """The run directory (config.yaml, model.safetensors, meta.json) behind ``ref``.

    A local directory is returned as is; a ``models:/`` URI is downloaded from the registry (the
    registered pyfunc model carries the run directory as its ``checkpoint`` artifact).
    """
    if not is_model_uri(ref):
        path = Path(ref)
        if not (path / "config.yaml").is_file():
            raise TvifmError(f"{ref}: not a run directory (no config.yaml); give a run dir or a models:/ URI")
        return path
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        root = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(dest) if dest else None)
        )
    except MlflowException as exc:
        raise TvifmError(f"{ref}: cannot resolve it in the MLflow registry ({exc.message})") from exc
    found = root / "artifacts" / CHECKPOINT_ARTIFACT
    if not (found / "config.yaml").is_file():
        raise TvifmError(
            f"{ref}: the registered model has no {CHECKPOINT_ARTIFACT} artifact with a config.yaml"
        )
    return found
