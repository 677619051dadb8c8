"""``serve build`` of the application and the builder import path a RayService's serveConfigV2 uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray._common.utils import import_attr
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.deployment import Application
from ray.serve.schema import ServeDeploySchema

from tvifm.errors import ConfigError
from tvifm.serve.app import service_config
from tvifm.serve.config import serve_config

REPO = Path(__file__).resolve().parents[3]
SERVE = Path(sys.executable).with_name("serve")


def test_serve_build_output_is_a_valid_config_whose_import_path_resolves(tmp_path: Path) -> None:
    out = tmp_path / "serve.yaml"
    subprocess.run(
        [str(SERVE), "build", "tvifm.serve.app:app", "-o", str(out)], cwd=REPO, check=True, timeout=300
    )

    config = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    assert app["import_path"] == "tvifm.serve.app:app"
    assert {d["name"] for d in app["deployments"]} == {"Ingress", "Embedder", "GalleryIndex"}
    index = next(d for d in app["deployments"] if d["name"] == "GalleryIndex")
    assert index["num_replicas"] == 1
    assert isinstance(
        call_user_app_builder_with_args_if_necessary(import_attr(app["import_path"]), {}), Application
    )


def test_builder_with_args_as_a_rayservice_calls_it(tmp_path: Path) -> None:
    args = {"model": "models:/tvifm@candidate", "embedder": {"autoscale": True, "max_replicas": 3}}
    config = service_config(serve_config(args))
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    builder = import_attr(app["import_path"])
    assert isinstance(call_user_app_builder_with_args_if_necessary(builder, app["args"]), Application)
    # the config survives a YAML round trip (as in a RayService manifest)
    again = yaml.safe_load(yaml.safe_dump(config))
    assert serve_config(again["applications"][0]["args"]).embedder.max_replicas == 3
    with pytest.raises(ConfigError, match=r"unknown key serve\.replicas"):
        call_user_app_builder_with_args_if_necessary(builder, {"replicas": 2})


def test_print_config_job_prints_the_same_config() -> None:
    result = subprocess.run(
        [sys.executable, "jobs/serve.py", "--print-config", "serve.model=runs/joint", "serve.port=8100"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    printed = yaml.safe_load(result.stdout)
    assert printed == service_config(serve_config({"model": "runs/joint", "port": 8100}))
