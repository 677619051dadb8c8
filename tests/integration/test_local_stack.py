"""``infra/local_stack.py`` for real: start the three services, use each the way the README does (a
``ray job submit``, an MLflow REST call, an S3 put/get), stop, and check nothing is left running."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "local_stack.py"
WRAPPER = REPO / "infra" / "local_stack.sh"
VENV_BIN = Path(sys.executable).parent
EXPORTED = (
    "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH",
    "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
)  # fmt: skip

pytestmark = pytest.mark.slow  # a Ray head, an MLflow server and a job: about a minute


def _stack(stack_dir: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), *args, "--dir", str(stack_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _exports(stdout: str) -> dict[str, str]:
    """The ``export K=V`` lines of ``start``/``env`` as a mapping (values unquoted as the shell would)."""
    env = {}
    for line in stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
        else:
            assert not line or line.startswith("#"), f"stdout must be eval-able, got {line!r}"
    return env


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _in_session(sid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[0] != "Z" and sid in (int(fields[2]), int(fields[3])):
                found.append(int(entry.name))
    return found


def _listening(pids: list[int]) -> list[str]:
    """The local addresses (``hex-ip:hex-port`` as in ``/proc/net/tcp*``) the processes listen on."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN, socket of one of the pids
                found.append(fields[1])
    return found


def _is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or an IPv4-mapped 127.x address, from the kernel's hex notation."""
    ip = address.split(":")[0]
    if len(ip) == 8:  # IPv4, bytes in host (little-endian) order
        return ip[6:8] == "7F"
    return ip == "00000000000000000000000001000000" or (
        ip[:24] == "0000000000000000FFFF0000" and ip[30:32] == "7F"
    )


def test_start_use_and_stop_the_local_stack(tmp_path: Path) -> None:
    stack_dir = tmp_path / "stack"
    started = _stack(stack_dir, "start", "--num-cpus", "1")
    state_file = stack_dir / "stack.json"
    try:
        assert started.returncode == 0, started.stderr
        env = _exports(started.stdout)
        for key in EXPORTED:
            assert env.get(key), f"start did not export {key}"
        assert env["RAY_AUTH_MODE"] == "token"
        assert oct(os.stat(env["RAY_AUTH_TOKEN_PATH"]).st_mode & 0o777) == "0o600"

        # status (through the shell wrapper) reports every service up
        status = subprocess.run(
            ["bash", str(WRAPPER), "status", "--json", "--dir", str(stack_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["running"] is True
        assert {name for name, s in report["services"].items() if s["up"]} == {"s3", "mlflow", "ray"}

        # a second start refuses instead of starting a second copy
        again = _stack(stack_dir, "start", timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr

        # `ray job submit` with exactly the printed environment; the job reaches S3 through the stack's
        # settings, which the Ray head passes on to its drivers
        job_env = {**os.environ, **env, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        job_code = (
            "import boto3, os; "
            "boto3.client('s3').put_object("
            "Bucket='tvifm-data', Key='from-job.txt', Body=os.getcwd().encode()); "
            "print('tracking', os.environ['MLFLOW_TRACKING_URI'])"
        )
        job = subprocess.run(
            [str(VENV_BIN / "ray"), "job", "submit", "--", "python", "-c", job_code],
            env=job_env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert f"tracking {env['MLFLOW_TRACKING_URI']}" in job.stdout + job.stderr

        # S3: the object the job wrote, and a put/get of our own
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip
        written = s3.get_object(Bucket="tvifm-data", Key="from-job.txt")["Body"].read().decode()
        assert written == str(REPO), "job drivers run from the repository, so `python jobs/x.py` resolves"
        s3.put_object(Bucket="tvifm-checkpoints", Key="probe/hello.txt", Body=b"hello")
        assert s3.get_object(Bucket="tvifm-checkpoints", Key="probe/hello.txt")["Body"].read() == b"hello"

        # MLflow REST: create an experiment and read it back
        uri = env["MLFLOW_TRACKING_URI"]
        body = json.dumps({"name": "local-stack-probe"}).encode()
        request = urllib.request.Request(
            f"{uri}/api/2.0/mlflow/experiments/create",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            experiment_id = json.load(resp)["experiment_id"]
        with urllib.request.urlopen(
            f"{uri}/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}", timeout=30
        ) as resp:
            assert json.load(resp)["experiment"]["name"] == "local-stack-probe"

        records = json.loads(state_file.read_text())["services"]
        # nothing of the stack listens beyond this machine: every socket is bound to loopback
        sockets = {name: _listening(_in_session(record["pgid"])) for name, record in records.items()}
        assert all(sockets.values()), f"a service without a listening socket: {sockets}"
        exposed = {name: [a for a in found if not _is_loopback(a)] for name, found in sockets.items()}
        assert not any(exposed.values()), f"listening on other interfaces than loopback: {exposed}"
    finally:
        stopped = _stack(stack_dir, "stop", timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    assert not state_file.exists()
    for name, record in records.items():
        assert not _alive(record["pid"]), f"{name} (pid {record['pid']}) still runs after stop"
        assert not _in_session(record["pgid"]), f"{name} left processes behind: {_in_session(record['pgid'])}"
    assert not Path(records["ray"]["temp_dir"]).exists()
    after = _stack(stack_dir, "status", timeout=60)
    assert after.returncode == 1
