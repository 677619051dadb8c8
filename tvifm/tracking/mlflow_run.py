"""MLflow runs of training jobs: one run per job (both stages), resumed by run name, params from the
resolved config, per-epoch metrics logged exactly once, evaluation artifacts, model registration."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvifm.config.loader import config_hash, to_dict
from tvifm.config.schema import Config
from tvifm.models.run import EpochLog

RUN_NAME_TAG = "tvifm.run_name"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
PIP_REQUIREMENTS = ["torch", "torchvision", "open_clip_torch", "safetensors", "pillow", "numpy", "pyyaml"]


def flat_params(cfg: Config) -> dict[str, str]:
    """The resolved config as ``section.key`` -> string (MLflow params)."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix.rstrip(".")] = str(node)[:500]

    walk("", to_dict(cfg))
    return out


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def start_or_resume_run(uri: str, cfg: Config, run_name: str) -> str:
    """The id of the MLflow run named ``run_name`` in the configured experiment (created if absent)."""
    client = _client(uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(cfg.tracking.experiment)
    found = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(
        exp_id, run_name=run_name, tags={RUN_NAME_TAG: run_name, "tvifm.config_hash": config_hash(cfg)}
    )
    from mlflow.entities import Param

    params = [Param(k, v) for k, v in flat_params(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i : i + 100])
    return run.info.run_id


def epoch_metrics(stage: str, log: EpochLog) -> dict[str, float]:
    """The scalar metrics of one epoch, keyed ``<stage>/loss/<name>``, ``<stage>/val/<mode>/<metric>``."""
    metrics = {f"{stage}/loss/{k}": float(v) for k, v in log.losses.items()}
    metrics[f"{stage}/lr"] = float(log.lr)
    metrics[f"{stage}/epoch_seconds"] = float(log.seconds)
    if log.peak_rss_mb:
        metrics[f"{stage}/peak_rss_mb"] = float(log.peak_rss_mb)
    for mode, values in (log.val or {}).items():
        for k, v in values.items():
            if isinstance(v, float) and not k.endswith("_std") and k != "trials":
                metrics[f"{stage}/val/{mode}/{k}"] = v
    return metrics


@dataclass
class EpochLogger:
    """Trainer callback (rank 0): logs an epoch's metrics to the run unless that epoch is logged already.

    Idempotent by design, so a worker restarted after a failure never logs an epoch twice.
    """

    uri: str
    run_id: str
    stage: str

    def __call__(self, log: EpochLog) -> None:
        from mlflow.entities import Metric

        client = _client(self.uri)
        key = f"{self.stage}/loss/total"
        if any(m.step == log.epoch for m in client.get_metric_history(self.run_id, key)):
            return
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, log.epoch) for k, v in epoch_metrics(self.stage, log).items()]
        client.log_batch(self.run_id, metrics=metrics)


def log_artifacts(uri: str, run_id: str, files: list[Path], artifact_path: str = "evaluation") -> None:
    """Upload files to the run."""
    client = _client(uri)
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path=artifact_path)


def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark the run finished (or FAILED)."""
    _client(uri).set_terminated(run_id, status=status)


@dataclass
class Registration:
    """Outcome of :func:`register_model`."""

    name: str
    version: str
    val_rank1: float
    promoted: bool
    previous_production: str | None


def register_model(uri: str, run_id: str, run_dir: str | Path, name: str, val_rank1: float) -> Registration:
    """Log the run directory as the ``tvifm`` pyfunc, register it under ``name`` with alias ``candidate``,
    and move alias ``production`` to it only when its validation Rank-1 beats the current production's."""
    import mlflow

    client = _client(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # the registry is the tracking server's, whatever MLFLOW_REGISTRY_URI says
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts={"checkpoint": str(run_dir)},
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "val_rank1", f"{val_rank1:.6f}")
    client.set_registered_model_alias(name, "candidate", version)
    previous = _production(client, name)
    promoted = previous is None or val_rank1 > float(previous.tags.get("val_rank1", "-1"))
    if promoted:
        client.set_registered_model_alias(name, "production", version)
    return Registration(name, version, val_rank1, promoted, previous.version if previous else None)


def _production(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, "production")
    except MlflowException:
        return None
