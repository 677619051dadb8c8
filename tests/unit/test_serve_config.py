"""ServeConfig: defaults, validation through the project's loader, and the Serve options it produces."""

from __future__ import annotations

import pytest

from tvifm.config.loader import from_dict
from tvifm.errors import ConfigError
from tvifm.serve.app import scaling_options, service_config
from tvifm.serve.config import ServeConfig, config_dict, serve_config


def test_defaults_are_valid_and_round_trip() -> None:
    cfg = ServeConfig()
    assert cfg.model == "models:/tvifm@production" and cfg.auth_token_env is None
    assert serve_config(config_dict(cfg)) == cfg
    assert from_dict(ServeConfig, config_dict(cfg)) == cfg


def test_nested_sections_and_overrides() -> None:
    cfg = serve_config(
        {"model": "runs/joint", "embedder": {"autoscale": True, "max_replicas": 8}},
        ["serve.embedder.min_replicas=2", "serve.max_top_k=50", "serve.gallery_uri=s3://bucket/gallery"],
    )
    assert cfg.embedder.autoscale and cfg.embedder.min_replicas == 2 and cfg.embedder.max_replicas == 8
    assert cfg.max_top_k == 50 and cfg.gallery_uri == "s3://bucket/gallery"
    assert cfg.ingress.num_cpus == 0.25  # the ingress section keeps its own defaults
    with pytest.raises(ConfigError, match=r"serve\.key=value"):  # the one override style of every job
        serve_config({}, ["port=9000"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"modle": "x"}, "unknown key serve.modle.*valid keys:.*model"),
        ({"embedder": {"replicas": 2}}, "unknown key serve.embedder.replicas"),
        ({"max_top_k": 0}, "max_top_k=0 is too small"),
        ({"device": "tpu"}, "device='tpu' is not allowed; choose one of: auto, cpu, cuda"),
        ({"port": "80"}, "port: expected int"),
        ({"default_top_k": 20, "max_top_k": 10}, "default_top_k=20 exceeds serve.max_top_k=10"),
        ({"max_image_bytes": 4096, "max_request_bytes": 2048}, "max_image_bytes=4096 exceeds"),
        ({"embedder": {"autoscale": True, "min_replicas": 5, "max_replicas": 2}}, "min_replicas=5 exceeds"),
    ],
)
def test_invalid_values_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        serve_config(data)


def test_scaling_options_fixed_and_autoscaled() -> None:
    cfg = serve_config({"embedder": {"num_replicas": 3, "num_cpus": 2.0, "num_gpus": 1.0}})
    fixed = scaling_options(cfg.embedder, {"TOKEN_VAR": "x"})
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {
        "num_cpus": 2.0,
        "num_gpus": 1.0,
        "runtime_env": {"env_vars": {"TOKEN_VAR": "x"}},
    }
    auto = scaling_options(serve_config({"embedder": {"autoscale": True, "max_replicas": 6}}).embedder)
    assert "num_replicas" not in auto
    assert auto["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 6,
        "target_ongoing_requests": 2.0,
    }


def test_service_config_is_a_valid_serve_config_with_the_builder_and_args() -> None:
    cfg = serve_config({"model": "models:/tvifm/3", "route_prefix": "/reid", "port": 8100})
    out = service_config(cfg)
    (app,) = out["applications"]
    assert app["import_path"] == "tvifm.serve.app:build_app" and app["route_prefix"] == "/reid"
    assert serve_config(app["args"]) == cfg and out["http_options"]["port"] == 8100
