"""The embedded MLflow tracking server: ``mlflow server`` with a SQLite store on loopback.

:class:`LocalMlflowServer` starts it as a child process, waits until ``/health`` answers, and stops it
(terminate, then kill after a grace period) on exit, so nothing is left behind. :func:`check_reachable`
is the preflight every job runs before training, so an unreachable server fails fast and clearly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from tvifm.errors import TvifmError


class TrackingError(TvifmError):
    """The MLflow tracking server is unreachable or refused a request."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_up(uri: str, timeout: float = 2.0) -> bool:
    """True when ``<uri>/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """Raise :class:`TrackingError` unless the HTTP tracking server at ``uri`` answers within ``timeout``.

    Non-HTTP URIs (a local ``file:`` or ``sqlite:`` store) need no server and pass.
    """
    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_up(uri, timeout=min(2.0, timeout)):
            return
        time.sleep(0.5)
    raise TrackingError(
        f"MLflow tracking server {uri} is unreachable (no answer on /health within {timeout:.0f} s); "
        "start it (infra/local_stack.sh start), fix MLFLOW_TRACKING_URI / tracking.uri, or set "
        "tracking.enabled=false to train without tracking"
    )


class LocalMlflowServer:
    """``mlflow server`` on loopback with ``root/mlflow.db`` and artifacts under ``root/artifacts``."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.root = Path(root).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.uri = f"http://{host}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The server command line."""
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", self.host, "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip

    def start(self, timeout: float = 180.0) -> str:
        """Start the server and wait until it answers; returns its URI."""
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the child process owns it
        env = {**os.environ, "MLFLOW_HOME": str(self.root)}
        self._proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise TrackingError(
                    f"mlflow server exited with {self._proc.returncode}; see {self.root}/server.log"
                )
            if is_up(self.uri, timeout=1.0):
                return self.uri
            time.sleep(0.5)
        self.stop()
        raise TrackingError(
            f"mlflow server did not answer within {timeout:.0f} s; see {self.root}/server.log"
        )

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server and its workers (the whole process group it leads)."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = None
            return
        pgid = os.getpgid(self._proc.pid)
        os.killpg(pgid, 15)
        try:
            self._proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, 9)
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> LocalMlflowServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
