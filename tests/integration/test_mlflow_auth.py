"""The cluster's MLflow trust model, for real: an ``mlflow server --app-name basic-auth`` with the settings
of ``k8s/40-mlflow.yaml`` (the ConfigMap's ``basic_auth.ini``, its database swapped for SQLite), set up by
the user Job's own script. Then the training user registers and promotes a model with tvifm's
registration code, the serving user loads ``models:/tvifm@production`` as the service does but may not
move an alias, and requests without a (valid) user are refused."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tvifm.tracking.server import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # an MLflow server and a model registration: under a minute


def _auth_config_map() -> dict[str, str]:
    docs = yaml.safe_load_all((REPO / "k8s" / "40-mlflow.yaml").read_text())
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "tvifm-mlflow-auth"]
    return config["data"]


def _job_env() -> dict[str, str]:
    """The plain (non-Secret) environment of the user Job."""
    docs = yaml.safe_load_all((REPO / "k8s" / "40-mlflow.yaml").read_text())
    (job,) = [d for d in docs if d["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@dataclass
class Server:
    uri: str
    admin: tuple[str, str]
    users: dict[str, tuple[str, str]]
    script: Path


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("mlflow-auth")
    data = _auth_config_map()
    ini = data["basic_auth.ini"]
    database = next(line for line in ini.splitlines() if line.startswith("database_uri"))
    (root / "basic_auth.ini").write_text(
        ini.replace(database, f"database_uri = sqlite:///{root / 'auth.db'}")
    )
    (root / "setup_users.py").write_text(data["setup_users.py"])
    admin = (_job_env()["MLFLOW_TRACKING_USERNAME"], secrets.token_hex(12))
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "art"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(uri, proc, root / "server.log")
        users = {
            "train": ("tvifm-train", secrets.token_hex(12)),
            "serve": ("tvifm-serve", secrets.token_hex(12)),
        }
        yield Server(uri, admin, users, root / "setup_users.py")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_healthy(uri: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow server did not answer: {log.read_text()[-3000:]}")


def _run_setup(server: Server) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **_job_env(),
        "MLFLOW_TRACKING_URI": server.uri,
        "MLFLOW_TRACKING_PASSWORD": server.admin[1],
        "TRAIN_USERNAME": server.users["train"][0],
        "TRAIN_PASSWORD": server.users["train"][1],
        "SERVE_USERNAME": server.users["serve"][0],
        "SERVE_PASSWORD": server.users["serve"][1],
    }
    return subprocess.run(
        [sys.executable, str(server.script)], env=env, capture_output=True, text=True, timeout=300
    )


def _as(monkeypatch: pytest.MonkeyPatch, user: tuple[str, str] | None) -> None:
    """Sign the MLflow client in as ``user`` (None: anonymous)."""
    for key, value in zip(
        ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"), user or (None, None), strict=True
    ):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)


def _run_dir(path: Path) -> Path:
    import torch

    from tvifm.checkpoint import save_weights, write_json
    from tvifm.config import load_config, save_config
    from tvifm.models.tvifm import TVIFM

    torch.manual_seed(0)
    cfg = load_config(
        "tiny", ["data.image_size=[64,32]", "backbone.tiny_widths=[16,16,32,32]", "text.context_length=32"]
    )
    save_config(cfg, path)
    save_weights(TVIFM(cfg.backbone, cfg.text, num_classes=4), path / "model.safetensors")
    write_json(path / "meta.json", {"stage": "joint", "num_classes": 4})
    return path


def test_only_the_training_user_moves_aliases_and_the_service_reads(
    auth_server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tvifm.models import load_model
    from tvifm.tracking.mlflow_run import register_model

    for attempt in range(2):  # the Job may run again (re-apply, password rotation): idempotent
        done = _run_setup(auth_server)
        assert done.returncode == 0, f"run {attempt + 1}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    settings = _job_env()
    experiment, model = settings["TVIFM_EXPERIMENT"], settings["TVIFM_REGISTERED_MODEL"]
    client = MlflowClient(auth_server.uri)

    _as(monkeypatch, None)  # no user: refused before anything is read
    with pytest.raises(MlflowException, match="401"):
        client.get_registered_model(model)
    _as(monkeypatch, (auth_server.users["serve"][0], "wrong password"))
    with pytest.raises(MlflowException, match="401"):
        client.get_registered_model(model)

    # the training job: a run in the experiment, registration and promotion with tvifm's own code
    _as(monkeypatch, auth_server.users["train"])
    run = client.create_run(client.get_experiment_by_name(experiment).experiment_id)
    # a registry left in the environment (a gone server) must not divert the registration
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"http://127.0.0.1:{free_port()}")
    registration = register_model(auth_server.uri, run.info.run_id, _run_dir(tmp_path / "run"), model, 0.5)
    assert registration.promoted and registration.version == "1"

    # the service: resolves and loads the production model, but may change nothing in the registry
    _as(monkeypatch, auth_server.users["serve"])
    loaded = load_model(f"models:/{model}@production", tracking_uri=auth_server.uri)
    assert (loaded.info.version, loaded.info.alias) == ("1", "production")
    for change in (
        lambda: client.set_registered_model_alias(model, "production", "1"),
        lambda: client.delete_registered_model_alias(model, "candidate"),
        lambda: client.create_model_version(model, "models:/tvifm/1"),
        lambda: client.create_run(client.get_experiment_by_name(experiment).experiment_id),
    ):
        with pytest.raises(MlflowException, match="403"):
            change()
    assert client.get_model_version_by_alias(model, "production").version == "1"

    # the probes' path stays open
    with urllib.request.urlopen(f"{auth_server.uri}/health", timeout=10) as resp:
        assert resp.status == 200
