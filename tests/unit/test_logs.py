"""tvifm.logs: a job's console keeps to tvifm's output, the frameworks' logs go to one file."""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

from tvifm import logs
from tvifm.logs import _LogRouter, _WorkerBars, log_dir, quiet_frameworks


class _Console(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the ``sys.stderr`` of the moment, as Ray's and MLflow's console handlers do."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@pytest.fixture
def framework_logger() -> Iterator[logging.Logger]:
    """``mlflow``'s logger with a console handler, as MLflow sets it up on import (restored after)."""
    logger = logging.getLogger("mlflow")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers = [_Console()]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers, logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


def test_framework_logs_and_warnings_go_to_the_file_and_tvifm_output_stays(
    tmp_path: Path,
    framework_logger: logging.Logger,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    recwarn: pytest.WarningsRecorder,
) -> None:
    console = framework_logger.handlers[:]
    mlflow_file = os.path.join(find_spec("mlflow").submodule_search_locations[0], "tracking", "x.py")
    with quiet_frameworks(tmp_path / "logs", "job") as path:
        assert path is not None and path.parent == tmp_path / "logs"
        framework_logger.info("run started at http://mlflow")
        logging.getLogger("mlflow.store.sql").warning("migrating the store")
        logging.getLogger("tvifm.data").warning("2 images skipped")  # ours: stays on the console
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn_explicit("type hint not supported", UserWarning, mlflow_file, 3)
            warnings.warn_explicit("ours", UserWarning, __file__, 1)
        print("[tvifm] stage done")
    out, err = capsys.readouterr()
    assert err.count(str(path)) == 1 and "[tvifm] stage done" in out  # the notice keeps stdout clean
    assert "mlflow" not in err and "type hint" not in err and "migrating" not in err
    assert [r.getMessage() for r in caplog.records] == ["2 images skipped"]  # handled as before
    assert [str(w.message) for w in recwarn] == ["ours"]
    log = path.read_text()
    assert "skipped" not in log and "ours" not in log
    assert "INFO mlflow: run started at http://mlflow" in log
    assert "WARNING mlflow.store.sql: migrating the store" in log
    assert "UserWarning: type hint not supported" in log
    assert framework_logger.handlers == console and framework_logger.propagate is False  # as before


def test_verbose_moves_nothing(
    tmp_path: Path, framework_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    with quiet_frameworks(tmp_path / "logs", "job", verbose=True) as path:
        framework_logger.warning("on the console")
    assert path is None and not (tmp_path / "logs").exists()
    out, err = capsys.readouterr()
    assert out == "" and err == "on the console\n"


def test_a_job_inside_a_job_keeps_the_outer_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with quiet_frameworks(tmp_path, "outer") as outer, quiet_frameworks(tmp_path, "inner") as inner:
        assert inner == outer
    assert capsys.readouterr().err.count("logs:") == 1


def test_the_log_file_is_named_again_when_the_job_fails(
    tmp_path: Path, framework_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RuntimeError), quiet_frameworks(tmp_path, "job") as path:
        framework_logger.error("worker died")
        raise RuntimeError("stage failed")
    assert f"the frameworks' logs of this run are in {path}" in capsys.readouterr().err


def test_ray_worker_output_goes_to_the_file_but_the_trainers_bar_is_redrawn(tmp_path: Path) -> None:
    router = _LogRouter(tmp_path / "job.log")
    console = io.StringIO()
    bars = _WorkerBars(lambda: console)
    worker = {"pid": 7, "ip": "10.0.0.1", "localhost": "10.0.0.1", "actor_name": "RayTrainWorker"}
    chunks = [
        "[2026-12-03 08:40:34,320] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator",
        "base epoch 1/2:   0%|          | 0/3 [00:00<?, ?it/s]",
        "base epoch 1/2:  33%|███▎ | 1/3 [00:01<00:02, 1.0it/s, loss=5.7]\rbase epoch 1/2:  67%|██▋ | 2/3 [",
        "00:02<00:01, 1.0it/s, loss=4.1]\rbase epoch 1/2: 100%|█████| 3/3 [00:03<00:00, 1.0it/s, loss=3.6]",
        "base epoch 1/2: 100%|██████████| 3/3 [00:03<00:00, 1.0it/s, loss=3.6]",  # tqdm's redraw on close
        "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/tmp/x)",
        "base epoch 2/2:  50%|█████     | 1/2 [00:01<00:01, 1.0it/s, loss=3.1]",
    ]
    for chunk in chunks:
        router.worker_output({**worker, "lines": [chunk]}, bars)
    router.worker_output({"pid": 9, "ip": "10.0.0.2", "localhost": "10.0.0.1", "lines": ["remote"]}, bars)
    bars.close()
    router.file.close()
    assert console.getvalue().split("\n") == [
        "\rbase epoch 1/2:   0%|          | 0/3 [00:00<?, ?it/s]"
        "\rbase epoch 1/2:  67%|██▋ | 2/3 ["
        "\rbase epoch 1/2: 100%|█████| 3/3 [00:03<00:00, 1.0it/s, loss=3.6]",
        "\rbase epoch 2/2:  50%|█████     | 1/2 [00:01<00:01, 1.0it/s, loss=3.1]",
        "",
    ]
    assert (tmp_path / "job.log").read_text().splitlines() == [
        f"(RayTrainWorker pid=7) {chunks[0]}",
        f"(RayTrainWorker pid=7) {chunks[5]}",
        "(pid=9, ip=10.0.0.2) remote",
    ]


def test_the_log_folder_is_the_output_folder_unless_it_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert log_dir(str(tmp_path / "runs")) == tmp_path / "runs" / "logs"  # made when first written
    assert log_dir("s3://bucket/runs").name == "tvifm-logs"
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    monkeypatch.setattr(logs.os, "access", lambda path, mode: Path(path) != read_only)  # root writes anyway
    assert log_dir(str(read_only / "runs")).name == "tvifm-logs"  # e.g. the image's read-only app folder
