"""The training job behind ``jobs/train.py``: tracking preflight, Ray, both stages, evaluation, registry.

:func:`tracking_session` and :func:`training_cluster` bring up what the job needs and tear down only what
they started (an embedded MLflow server, a local Ray); :func:`train_job` runs the configured stages
with Ray Train + DeepSpeed, evaluates the final model on the test split, logs the artifacts and
registers the model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvifm.config.schema import Config
from tvifm.data import storage
from tvifm.engine.trainer import EpochCallback
from tvifm.errors import TvifmError
from tvifm.models.query import main_mode
from tvifm.models.run import RunDir


@contextmanager
def tracking_session(cfg: Config) -> Iterator[str | None]:
    """The MLflow tracking URI for this job, checked reachable *before* any training starts.

    ``tracking.uri`` or ``MLFLOW_TRACKING_URI`` when set; otherwise an embedded server on loopback
    (SQLite + local artifacts under ``tracking.local_root``) that this context starts and stops.
    ``None`` when tracking is disabled.
    """
    if not cfg.tracking.enabled:
        yield None
        return
    from tvifm.tracking.server import LocalMlflowServer, check_reachable

    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        check_reachable(uri, cfg.tracking.timeout_s)
        yield uri
        return
    with LocalMlflowServer(cfg.tracking.local_root) as server:
        yield server.uri


@contextmanager
def training_cluster(cfg: Config) -> Iterator[None]:
    """Ray for the job: the running one, ``dist.ray_address`` / ``RAY_ADDRESS``, or a local Ray big
    enough for ``dist.num_workers x dist.cpus_per_worker``; only a Ray started here is shut down."""
    from tvifm.cluster import ray_session as session

    cpus = max(os.cpu_count() or 1, cfg.dist.num_workers * cfg.dist.cpus_per_worker)
    with session(cpus, cfg.dist.ray_address):
        yield


@dataclass
class TrainJobResult:
    """What :func:`train_job` produced."""

    run_name: str
    exports: dict[str, str]
    report: dict[str, Any]
    local_run: Path
    mlflow_run_id: str | None = None
    registration: Any = None
    artifacts: list[Path] = field(default_factory=list)


def train_job(cfg: Config, tracking_uri: str | None, *, evaluate: bool = True) -> TrainJobResult:
    """Run ``dist.stages`` with Ray Train + DeepSpeed, then evaluate, log and register the final model."""
    from tvifm.engine.distributed import run_stage

    run_name = cfg.dist.run_name or cfg.name
    run_id = _start_tracking(cfg, tracking_uri, run_name)
    exports: dict[str, str] = {}
    try:
        for stage in cfg.dist.stages:
            init = (
                exports.get("base") or _existing_export(cfg, "base") if stage == "joint" else None
            )
            callbacks: list[EpochCallback] = _loggers(tracking_uri, run_id, stage)
            exports[stage] = run_stage(cfg, stage, init_uri=init, callbacks=callbacks).run_uri
        local = _local_copy(exports[cfg.dist.stages[-1]])
        result = TrainJobResult(run_name, exports, {}, local, run_id)
        if evaluate:
            _evaluate_and_log(cfg, result, tracking_uri)
        if tracking_uri and run_id:
            result.registration = _register(cfg, tracking_uri, run_id, local)
            _finish(tracking_uri, run_id, "FINISHED")
        return result
    except BaseException:
        if tracking_uri and run_id:
            _finish(tracking_uri, run_id, "FAILED")
        raise


def _start_tracking(cfg: Config, uri: str | None, run_name: str) -> str | None:
    if not uri:
        return None
    from tvifm.tracking.mlflow_run import start_or_resume_run

    return start_or_resume_run(uri, cfg, run_name)


def _loggers(uri: str | None, run_id: str | None, stage: str) -> list[EpochCallback]:
    if not (uri and run_id):
        return []
    from tvifm.tracking.mlflow_run import EpochLogger

    return [EpochLogger(uri, run_id, stage)]


def _finish(uri: str, run_id: str, status: str) -> None:
    from tvifm.tracking.mlflow_run import finish_run

    finish_run(uri, run_id, status)


def _existing_export(cfg: Config, stage: str) -> str:
    from tvifm.engine.distributed import export_uri

    uri = export_uri(cfg, stage)
    if not storage.exists(storage.join(uri, RunDir.WEIGHTS)):
        raise TvifmError(
            f"stage joint needs the base stage's model at {uri}; run dist.stages=[base,joint] "
            "or the base stage first with the same dist.run_name"
        )
    return uri


def _local_copy(uri: str) -> Path:
    if not storage.is_s3(uri):
        return Path(uri)
    return storage.download_tree(uri, Path(tempfile.mkdtemp(prefix="tvifm-export-")))


def _evaluate_and_log(cfg: Config, result: TrainJobResult, uri: str | None) -> None:
    from tvifm.eval.offline import evaluate_run
    from tvifm.eval.report import cmc_plot, markdown_table, ranked_grid

    result.report = evaluate_run(result.local_run, progress=False)
    out = Path(tempfile.mkdtemp(prefix="tvifm-eval-"))
    (out / "evaluation.json").write_text(json.dumps(result.report, indent=2))
    (out / "evaluation.md").write_text(markdown_table(result.report))
    files = [
        out / "evaluation.json",
        out / "evaluation.md",
        cmc_plot(result.report, out / "cmc.png"),
        ranked_grid(result.local_run, out / "retrieval_grid.png"),
        result.local_run / RunDir.CONFIG,
    ]
    result.artifacts = files
    if uri and result.mlflow_run_id:
        from tvifm.tracking.mlflow_run import log_artifacts

        log_artifacts(uri, result.mlflow_run_id, files)


def _register(cfg: Config, uri: str, run_id: str, local: Path) -> Any:
    from tvifm.tracking.mlflow_run import register_model

    val = RunDir(local).meta().get("best_val") or {}
    rank1 = float(val.get(main_mode(val), {}).get("rank1", 0.0))
    return register_model(uri, run_id, local, cfg.tracking.registered_model, rank1)
