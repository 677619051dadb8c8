"""Resuming a DeepSpeed runner reads tensors only: a planted pickle in ``last/deepspeed`` is refused, never
run, and an honest checkpoint still restores the optimiser state.

Each case runs the runner in a child process of its own (a one-rank gloo process group, no Ray), so the
test process holds no process group; this file is also that child's script.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL_STATES = "mp_rank_00_model_states.pt"
OPTIM_STATES = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1")
    env.update(LOCAL_RANK="0", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, timeout=600
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(lines[-1])


class _Evil:
    """Unpickling this object opens (creates) the marker file: what an attacker's code would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_resume_restores_an_honest_checkpoint_and_refuses_a_planted_pickle_without_running_it(
    tmp_path: Path, zero_stage: int
) -> None:
    import torch

    honest = tmp_path / "honest"
    saved = _child("save", str(zero_stage), str(honest))
    files = sorted(p.name for p in (honest / "deepspeed" / "last").iterdir())
    planted = [MODEL_STATES] + ([OPTIM_STATES] if zero_stage else [])
    assert set(planted) <= set(files), files
    marker = tmp_path / "pwned"
    tampered = []
    for name in planted:  # the first file resume reads, and the ZeRO optimiser shard
        copy = shutil.copytree(honest, tmp_path / f"tampered-{name}")
        torch.save({"module": _Evil(marker)}, copy / "deepspeed" / "last" / name)
        tampered.append(copy)

    first, *refused = _child("load", str(zero_stage), str(honest), *map(str, tampered))["results"]
    assert first.get("error") is None, first
    assert first["epoch"] == saved["epoch"] == 1
    assert first["state"] == pytest.approx(saved["state"]) and saved["state"]
    assert not marker.exists(), "resume ran code from the checkpoint"
    for copy, name, result in zip(tampered, planted, refused, strict=True):
        assert result["error"] == "CheckpointError", result
        assert str(copy / "deepspeed" / "last" / name) in result["message"]
        assert "not loaded" in result["message"] and "GLOBAL io.open" in result["message"]


# --- the child process --------------------------------------------------------------------------------------


def _runner(zero_stage: int):
    import torch
    from torch import nn

    from tvifm.config.schema import StageConfig
    from tvifm.engine.distributed import DeepSpeedRunner

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    return DeepSpeedRunner(
        model, StageConfig(lr=0.01), zero_stage=zero_stage, micro_batch=4, world_size=1, bf16=False
    )


def _optimiser_state(runner) -> list[float]:
    """A fingerprint of the fp32 master weights and Adam moments this rank holds."""
    sd = runner.optimizer.state_dict()
    flat: list[float] = []

    def walk(node) -> None:
        if hasattr(node, "float") and hasattr(node, "sum"):
            flat.append(float(node.float().abs().sum()))
        elif isinstance(node, dict):
            for key in sorted(node, key=str):
                walk(node[key])
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(sd)
    return flat


def _main(mode: str, zero_stage: int, directories: list[Path]) -> dict:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        if mode == "save":
            runner = _runner(zero_stage)
            runner.step(runner.engine(torch.randn(4, 4)).pow(2).sum())
            runner.epoch_end()
            runner.save_state(directories[0])
            return {"epoch": runner.epoch, "state": _optimiser_state(runner)}
        results = []
        for directory in directories:
            runner = _runner(zero_stage)
            try:
                runner.load_state(directory)
            except Exception as err:  # reported to the test, which expects a CheckpointError
                results.append({"error": type(err).__name__, "message": str(err)})
                continue
            results.append({"epoch": runner.epoch, "state": _optimiser_state(runner)})
        return {"results": results}
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    print(json.dumps(_main(sys.argv[1], int(sys.argv[2]), [Path(d) for d in sys.argv[3:]])), flush=True)
