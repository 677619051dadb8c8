"""``jobs/pipeline.py`` (what ``make run`` runs) keeps its console to the pipeline: stages, progress bars
and results on the console; Ray's and DeepSpeed's own logs in the file whose path it prints once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # every stage of the pipeline on a tiny dataset: two to three minutes

# What Ray and DeepSpeed print when nothing routes them: a forwarded worker line "(Name pid=123) ...",
# the Python logger format of Ray, its C++ core's, DeepSpeed's, and the Ray Train noise of issue 19.
FRAMEWORK_LINE = re.compile(
    r"\((?:[\w().,\[\]=-]+ )?pid=\w+(?:, ip=[\d.]+)?\) "
    r"|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+\.py:\d+ -- "
    r"|^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\] "
    r"|\[(?:DEBUG|INFO|WARNING|ERROR)\] \[\w+\.py:\d+:\w+\] "
    r"|PlacementGroupCleaner|Ray Train Controller|logging_progress|Running Dataset",
    re.MULTILINE,
)
LOG_LINE = re.compile(r"^\[tvifm\] Ray, DeepSpeed and MLflow logs: (\S+) ", re.MULTILINE)


def _overrides(tmp: Path, captioner: list[str]) -> list[str]:
    return [
        f"data.root={tmp / 'synthtri'}",
        f"out_dir={tmp / 'runs'}",
        f"dist.storage_path={tmp / 'ray'}",
        f"caption.captioner_dir={tmp / 'captioners'}",
        "synth.ids=12", "synth.image_size=[64, 32]", "synth.images_per_cam=[2, 2]",
        "data.image_size=[64, 32]", "data.ids_per_batch=4", "data.images_per_modality=2",
        "backbone.tiny_widths=[8, 8, 16, 16]", "text.context_length=48",
        "eval.trials=1", "eval.val_trials=1",
        "dist.stages=[base]", "dist.cpus_per_worker=1",
        "base.epochs=1", "base.warmup_epochs=0", "base.batches_per_epoch=2",
        *captioner, "caption.actors=1", "caption.infer_batch_size=16",
        "tracking.enabled=false",
    ]  # fmt: skip


def test_make_run_shows_the_pipeline_and_files_the_frameworks_logs(
    tmp_path: Path, tiny_captioner_overrides: list[str], kill_session: Callable[[int], list[int]]
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "jobs/pipeline.py", *_overrides(tmp_path, tiny_captioner_overrides)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
        kill_session(proc.pid)  # anything the job's Ray left behind
    console = stdout + stderr
    assert proc.returncode == 0, console[-5000:]

    noise = [m.group(0) for m in FRAMEWORK_LINE.finditer(console)]
    assert not noise, f"framework output on the console: {noise[:5]}"
    (path,) = LOG_LINE.findall(stderr)  # printed once, on stderr
    log = Path(path).read_text()
    assert Path(path).parent == tmp_path / "runs" / "logs"
    assert "(RayTrainWorker pid=" in log and "(TrainController pid=" in log  # Ray Train's own output
    assert "deepspeed" in log.lower()  # DeepSpeed's, from the training worker
    assert "Starting execution of Dataset" in log  # Ray Data's, from the driver

    assert "[tvifm] training, evaluation, registry done" in stdout
    assert re.search(r"(?:^|\r)base epoch 1/1: 100%", stderr, re.MULTILINE), "the trainer's progress bar"
    assert re.search(r"^caption visible: .*100%", stderr, re.MULTILINE), "the captioning progress bar"
    table = stdout[stdout.index("[tvifm] test results (%):") :]
    assert re.search(r"^protocol\s+mode\s+R1\s+R5\s+R10\s+R20\s+mAP\s+mINP$", table, re.MULTILINE)
    assert re.search(r"^all-single\s+ir\s+\d+\.\d\d", table, re.MULTILINE)
