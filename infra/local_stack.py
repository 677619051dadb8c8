#!/usr/bin/env python3
"""The local stack: the cluster's services on loopback, as detached background processes.

    python infra/local_stack.py start  [--dir DIR] [--num-cpus N]  # start; print the exports on stdout
    python infra/local_stack.py status [--dir DIR] [--json]         # exit 0 only when every service is up
    python infra/local_stack.py env    [--dir DIR]                  # print the exports again
    python infra/local_stack.py stop   [--dir DIR]                  # stop what ``start`` started

Three services stand in for what ``k8s/`` deploys on a cluster:

* ``s3``: moto's S3-compatible server (``python -m moto.server``), in memory, with the buckets the
  cluster uses (``BUCKETS``) created empty at start;
* ``mlflow``: the tracking server and model registry (the ``LocalMlflowServer`` command line: SQLite and
  local artifacts under ``DIR/mlflow``);
* ``ray``: a Ray head (``ray start --head --block``) with token authentication (``RAY_AUTH_MODE=token``,
  a per-stack token in ``DIR/ray_auth_token``) and the dashboard on, so ``ray job submit`` works. Its
  processes inherit the MLflow and S3 settings, so a submitted job finds both.

Every service listens on 127.0.0.1 only. For Ray that takes more than ``--node-ip-address=127.0.0.1``,
which Ray 2.60 replaces by the host's address: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (``LOOPBACK_ENV``,
Ray's switch for clusters that never span machines) keeps the node on loopback, so the GCS, raylet,
object manager, agents, workers and metrics endpoints bind to 127.0.0.1 instead of every interface. It
is exported too: a driver in the user's shell must see the same node address.

``start`` writes only ``export`` lines (and comments) on stdout, progress on stderr, so
``eval "$(infra/local_stack.sh start)"`` configures the current shell. Each service runs in a session of
its own; ``DIR/stack.json`` records its PID (= process group = session id), start time, ports and log.
``stop`` signals exactly those process groups (SIGTERM, SIGKILL after a grace period) and never looks
processes up by name; a recorded PID that now belongs to a different process is left alone. Logs are
in ``DIR/logs``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / "runs" / "stack"
STATE_FILE = "stack.json"
TOKEN_FILE = "ray_auth_token"
HOST = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
# the buckets of the cluster's object store (k8s/32-object-store-buckets.yaml creates the same ones)
BUCKETS = ("tvifm-data", "tvifm-models", "tvifm-checkpoints", "tvifm-mlflow", "tvifm-serve")
# moto accepts any credentials; these are the conventional test values, not secrets
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# keeps Ray's node address, and so every Ray server socket, on loopback (see the module docstring)
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
START_TIMEOUT = {"s3": 60.0, "mlflow": 180.0, "ray": 180.0}
STOP_GRACE = 30.0
SERVICES = ("s3", "mlflow", "ray")


class StackError(RuntimeError):
    """The stack cannot be started, or its state is unusable."""


# --- processes ------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago on loopback."""
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (None: no such process)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _group_and_session(pid: int) -> tuple[int, int] | None:
    """(process group, session) of a live process; None for a zombie or no process."""
    fields = _stat_fields(pid)
    return (int(fields[2]), int(fields[3])) if fields and fields[0] != "Z" else None


def is_ours(record: dict[str, Any]) -> bool:
    """True when the recorded process still runs (same PID *and* same start time, so not a reused PID)."""
    fields = _stat_fields(record["pid"])
    return bool(fields) and fields[0] != "Z" and int(fields[19]) == record["start_time"]


def group_members(record: dict[str, Any]) -> list[int]:
    """Live processes of the recorded process group (the service's session).

    Empty when the leader's PID has been reused by another process: then the recorded group no longer
    exists (Linux does not hand out an ID still in use as a process group or session).
    """
    leader_start = start_time(record["pid"])
    if leader_start is not None and leader_start != record["start_time"]:
        return []
    members = []
    for entry in Path("/proc").iterdir():
        ids = _group_and_session(int(entry.name)) if entry.name.isdigit() else None
        if ids and record["pgid"] in ids:
            members.append(int(entry.name))
    return members


def spawn(name: str, cmd: list[str], env: dict[str, str], logs: Path, cwd: Path = REPO) -> dict[str, Any]:
    """Start ``cmd`` detached, in a new session, with output to ``logs/<name>.log``; returns its record."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    began = start_time(proc.pid)
    if began is None:  # exited at once
        began = -1
    return {
        "name": name,
        "pid": proc.pid,
        "pgid": proc.pid,
        "start_time": began,
        "log": str(log_path),
        "cmd": cmd,
        "_proc": proc,
    }


def terminate(record: dict[str, Any], grace: float = STOP_GRACE) -> list[int]:
    """SIGTERM the recorded process group, SIGKILL what is left after ``grace`` seconds; returns the PIDs
    that were signalled."""
    members = group_members(record)
    if not members:
        return []
    _signal(record, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_members(record):
        _reap(record)
        time.sleep(0.2)
    if group_members(record):
        _signal(record, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and group_members(record):
            _reap(record)
            time.sleep(0.1)
    _reap(record)
    return members


def _signal(record: dict[str, Any], sig: signal.Signals) -> None:
    """Signal the recorded process group, and any process of its session that left the group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record["pgid"], sig)
    for pid in group_members(record):
        ids = _group_and_session(pid)
        if ids and ids[0] != record["pgid"]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _reap(record: dict[str, Any]) -> None:
    """Collect the exit status of a child this process started (so it does not linger as a zombie)."""
    proc = record.get("_proc")
    if proc is not None:
        proc.poll()


# --- health checks --------------------------------------------------------------------------------------


def http_status(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> int | None:
    """The HTTP status of GET ``url`` (error statuses included), or None when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def check(name: str, state: dict[str, Any]) -> bool:
    """True when service ``name`` answers on its port."""
    record = state["services"][name]
    if name == "s3":  # any S3 answer (even an auth error) means the endpoint is serving
        return http_status(record["url"] + "/") is not None
    if name == "mlflow":
        return http_status(record["url"] + "/health") == 200
    token = Path(state["env"]["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    return http_status(record["dashboard_url"] + "/api/version", headers) == 200


def wait_until(ready: Callable[[], bool], record: dict[str, Any], timeout: float) -> None:
    """Wait until ``ready()``; fail early when the service's process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        proc = record["_proc"]
        if proc.poll() is not None:
            raise StackError(f"{record['name']} exited with {proc.returncode}; see {record['log']}")
        time.sleep(0.5)
    raise StackError(f"{record['name']} did not answer within {timeout:.0f} s; see {record['log']}")


# --- state ----------------------------------------------------------------------------------------------


def load_state(root: Path) -> dict[str, Any] | None:
    path = root / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StackError(f"{path} is not valid JSON ({exc}); remove it after checking nothing runs") from exc
    if not isinstance(state, dict) or not isinstance(state.get("services"), dict):
        raise StackError(f"{path} is not a local-stack state file")
    return state


def save_state(root: Path, state: dict[str, Any]) -> None:
    """Write the state atomically (the records without their in-process handles)."""
    plain = {
        **state,
        "services": {
            n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in state["services"].items()
        },
    }
    tmp = root / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(plain, indent=2) + "\n")
    tmp.replace(root / STATE_FILE)


def exports(state: dict[str, Any]) -> str:
    """The shell lines that point a user's tools at the stack."""
    ray = state["services"].get("ray", {})
    lines = ["# tvifm local stack: eval these lines (or copy them) to use it"]
    if ray:
        lines.append(f"# Ray dashboard: {ray['dashboard_url']}  (ray job submit uses RAY_API_SERVER_ADDRESS)")
    lines += [f"export {key}={shlex.quote(value)}" for key, value in state["env"].items()]
    return "\n".join(lines)


# --- commands -------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ray_token(root: Path) -> Path:
    path = root / TOKEN_FILE
    if not path.is_file() or not path.read_text().strip():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path


def _base_env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for key in (
        "RAY_ADDRESS",
        "RAY_API_SERVER_ADDRESS",
        "RAY_AUTH_TOKEN",
        "AWS_ENDPOINT_URL_S3",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    ):
        env.pop(key, None)
    return env


def start(root: Path, num_cpus: int) -> int:
    old = load_state(root)
    if old is not None:
        alive = [r["name"] for r in old["services"].values() if group_members(r)]
        if alive:
            _say(
                f"the stack in {root} is already running ({', '.join(alive)}); "
                f"use `status`, or `stop` it first"
            )
            return 1
        _say(f"removing the state of a stack that is no longer running ({root / STATE_FILE})")
        _cleanup(root, old)
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    state: dict[str, Any] = {"version": 1, "dir": str(root), "created": time.time()}
    state.update(services={}, env={})
    try:
        _start_s3(root, logs, state)
        _start_mlflow(root, logs, state)
        _start_ray(root, logs, state, num_cpus)
    except BaseException:
        _say("start failed; stopping what was started")
        for record in reversed(list(state["services"].values())):
            terminate(record, grace=5.0)
        _cleanup(root, state)
        raise
    _say(f"tvifm local stack up (state: {root / STATE_FILE}, logs: {logs})")
    print(exports(state), flush=True)
    return 0


def _start_s3(root: Path, logs: Path, state: dict[str, Any]) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    record = spawn("s3", cmd, _base_env(), logs)
    record.update(port=port, url=f"http://{HOST}:{port}")
    state["services"]["s3"] = record
    save_state(root, state)
    _say(f"s3: moto server on {record['url']} (pid {record['pid']})")
    wait_until(lambda: check("s3", state), record, START_TIMEOUT["s3"])
    state["env"].update({"AWS_ENDPOINT_URL": record["url"], **S3_CREDENTIALS})
    _create_buckets(record["url"])
    save_state(root, state)


def _create_buckets(url: str) -> None:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=url, region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip
    for bucket in BUCKETS:
        client.create_bucket(Bucket=bucket)


def _start_mlflow(root: Path, logs: Path, state: dict[str, Any]) -> None:
    if str(REPO) not in sys.path:  # run from a checkout without the package installed
        sys.path.insert(0, str(REPO))
    from tvifm.tracking.server import LocalMlflowServer

    server = LocalMlflowServer(root / "mlflow", host=HOST, port=free_port())
    server.root.mkdir(parents=True, exist_ok=True)
    env = {**_base_env(), "MLFLOW_HOME": str(server.root)}
    record = spawn("mlflow", server.command(), env, logs, cwd=server.root)
    record.update(port=server.port, url=server.uri)
    state["services"]["mlflow"] = record
    save_state(root, state)
    _say(f"mlflow: tracking server on {server.uri} (pid {record['pid']})")
    wait_until(lambda: check("mlflow", state), record, START_TIMEOUT["mlflow"])
    state["env"]["MLFLOW_TRACKING_URI"] = server.uri
    save_state(root, state)


def _start_ray(root: Path, logs: Path, state: dict[str, Any], num_cpus: int) -> None:
    token = _ray_token(root)
    # Ray's socket paths are length-limited: a short temporary directory of its own, removed by `stop`
    temp = tempfile.mkdtemp(prefix="tvifm-ray-", dir="/tmp")
    gcs, dash, client, agent, agent_grpc, env_agent, metrics = free_ports(7)
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head", "--block", f"--node-ip-address={HOST}",
        f"--port={gcs}", "--include-dashboard=true", f"--dashboard-host={HOST}", f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
        f"--metrics-export-port={metrics}", f"--num-cpus={num_cpus}", "--disable-usage-stats",
        f"--temp-dir={temp}",
    ]  # fmt: skip
    env = {
        **_base_env(),
        **state["env"],  # every Ray process (job drivers, workers, replicas) finds MLflow and S3
        **LOOPBACK_ENV,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # nothing to drain locally: stop at once
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    record = spawn("ray", cmd, env, logs)
    record.update(port=gcs, dashboard_url=f"http://{HOST}:{dash}", temp_dir=temp)
    state["services"]["ray"] = record
    state["env"].update({**LOOPBACK_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
    save_state(root, state)
    _say(f"ray: head with dashboard on {record['dashboard_url']} (pid {record['pid']})")
    wait_until(lambda: check("ray", state), record, START_TIMEOUT["ray"])
    record["address"] = _gcs_address(Path(temp), gcs)
    state["env"].update({"RAY_ADDRESS": record["address"], "RAY_API_SERVER_ADDRESS": record["dashboard_url"]})
    save_state(root, state)


def _gcs_address(temp: Path, port: int) -> str:
    """The GCS address Ray registered (127.0.0.1 with ``LOOPBACK_ENV``)."""
    with contextlib.suppress(OSError):
        address = (temp / "ray_current_cluster").read_text().strip()
        if address:
            return address
    return f"{HOST}:{port}"


def status(root: Path, as_json: bool) -> int:
    state = load_state(root)
    if state is None:
        if as_json:
            print(json.dumps({"running": False, "services": {}}))
        else:
            _say(f"no local stack in {root} (start it with `start`)")
        return 1
    report = {}
    for name, record in state["services"].items():
        alive = is_ours(record)
        up = alive and check(name, state)
        report[name] = {
            "up": up,
            "pid": record["pid"],
            "pgid": record["pgid"],
            "port": record.get("port"),
            "url": record.get("dashboard_url", record.get("url")),
            "log": record["log"],
        }
    everything = set(report) == set(SERVICES) and all(r["up"] for r in report.values())
    if as_json:
        print(json.dumps({"running": everything, "services": report}, indent=2))
    else:
        for name, entry in report.items():
            mark = "up" if entry["up"] else "DOWN"
            print(f"{name:<7} {mark:<5} pid {entry['pid']:<8} {entry['url']}   log: {entry['log']}")
    return 0 if everything else 1


def env_command(root: Path) -> int:
    state = load_state(root)
    if state is None:
        _say(f"no local stack in {root}")
        return 1
    print(exports(state))
    return 0


def stop(root: Path) -> int:
    state = load_state(root)
    if state is None:
        _say(f"no local stack in {root}; nothing to stop")
        return 0
    for name in reversed(SERVICES):
        record = state["services"].get(name)
        if record is None:
            continue
        signalled = terminate(record)
        left = group_members(record)
        if left:
            _say(f"{name}: processes {left} survived SIGKILL")
            return 1
        _say(f"{name}: stopped" + (f" ({len(signalled)} processes)" if signalled else " (was not running)"))
    _cleanup(root, state)
    return 0


def _cleanup(root: Path, state: dict[str, Any]) -> None:
    temp = state["services"].get("ray", {}).get("temp_dir")
    if temp and Path(temp).name.startswith("tvifm-ray-"):
        shutil.rmtree(temp, ignore_errors=True)
    (root / STATE_FILE).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/local_stack.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("start", "start the stack and print the env exports"),
        ("status", "check that each service is up"),
        ("env", "print the env exports of the running stack"),
        ("stop", "stop the recorded process groups and remove the state"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state folder (default: runs/stack)")
        if name == "start":
            cmd.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the Ray head")
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="machine-readable report")
    args = parser.parse_args(argv)
    root = args.dir.resolve()
    try:
        if args.command == "start":
            return start(root, args.num_cpus)
        if args.command == "status":
            return status(root, args.json)
        if args.command == "env":
            return env_command(root)
        return stop(root)
    except StackError as exc:
        _say(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
