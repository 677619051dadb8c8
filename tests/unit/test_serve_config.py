"""ServeConfig: defaults, validation through the project's loader, and the Serve options it produces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tvifm.config.loader import from_dict
from tvifm.errors import ConfigError
from tvifm.serve.app import scaling_options, service_config, token_file_for_cluster
from tvifm.serve.config import ServeConfig, config_dict, index_spec, read_token, serve_config


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
    partial = serve_config({"ingress": {"num_replicas": 2}})  # ... also when given in part
    assert partial.ingress.num_replicas == 2 and partial.ingress.num_cpus == 0.25
    assert partial.ingress.max_ongoing_requests == 128 > partial.max_uploads
    assert partial.embedder.max_ongoing_requests == 32  # the class default elsewhere
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
        ({"index": "annoy"}, "index='annoy' is not allowed; choose one of: exact, ivf, hnsw"),
        ({"index_nlist": 16, "index_nprobe": 32}, "index_nprobe=32 exceeds serve.index_nlist=16"),
        ({"index_hnsw_m": 2}, "index_hnsw_m=2 is too small"),
        ({"rerank_candidates": 1}, "rerank_candidates=1 is too small"),
        ({"max_image_pixels": 200, "max_request_pixels": 100}, "max_image_pixels=200 exceeds"),
        ({"max_uploads": 4, "max_uploads_per_client": 5}, "max_uploads_per_client=5 exceeds"),
        ({"ingress": {"max_ongoing_requests": 96}}, "max_uploads=96 must be below .*=96, so /healthz"),
        ({"body_timeout_s": 0}, "body_timeout_s=0.0 is too small"),
    ],
)
def test_invalid_values_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        serve_config(data)


def test_index_settings_become_the_gallery_index_spec() -> None:
    assert index_spec(ServeConfig()).kind == "exact"
    spec = index_spec(
        serve_config({}, ["serve.index=ivf", "serve.index_nlist=1024", "serve.index_nprobe=16"])
    )
    assert (spec.kind, spec.nlist, spec.nprobe, spec.seed) == ("ivf", 1024, 16, 0)
    spec = index_spec(serve_config({"index": "hnsw", "index_ef_search": 128, "index_min_items": 5}))
    assert (spec.kind, spec.ef_search, spec.min_items) == ("hnsw", 128, 5)


def test_scaling_options_fixed_and_autoscaled() -> None:
    cfg = serve_config({"embedder": {"num_replicas": 3, "num_cpus": 2.0, "num_gpus": 1.0}})
    fixed = scaling_options(cfg.embedder)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    # no runtime_env: Ray writes runtime environments to its logs, so nothing goes to replicas that way
    assert fixed["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 1.0}
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


def test_auth_is_off_unless_a_token_source_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVIFM_SERVE_TOKEN", "secret")
    assert read_token(ServeConfig()) is None


def test_the_token_is_read_from_its_file_stripped(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  s3cr3t-token\n")
    assert read_token(serve_config({"auth_token_file": str(tmp_path / "token")})) == "s3cr3t-token"


def test_the_token_file_wins_and_the_variable_is_the_fallback_where_the_file_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN_VAR", "from-env")
    (tmp_path / "token").write_text("from-file")
    both = {"auth_token_file": str(tmp_path / "token"), "auth_token_env": "TOKEN_VAR"}
    assert read_token(serve_config(both)) == "from-file"
    elsewhere = {**both, "auth_token_file": str(tmp_path / "not-on-this-node")}
    assert read_token(serve_config(elsewhere)) == "from-env"


@pytest.mark.parametrize(
    ("settings", "content", "message"),
    [
        ({"auth_token_file": "{dir}/missing"}, None, r"auth_token_file=.*/missing does not exist where"),
        ({"auth_token_file": "{dir}/token"}, "  \n", r"auth_token_file=.*/token is empty"),
        (
            {"auth_token_env": "UNSET_TOKEN_VAR"},
            None,
            r"auth_token_env=UNSET_TOKEN_VAR: that variable is empty",
        ),
        (
            {"auth_token_file": "{dir}/missing", "auth_token_env": "UNSET_TOKEN_VAR"},
            None,
            r"missing does not exist here; serve.auth_token_env=UNSET_TOKEN_VAR",
        ),
    ],
)
def test_a_configured_but_missing_token_refuses_to_start_naming_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict, content: str | None, message: str
) -> None:
    monkeypatch.delenv("UNSET_TOKEN_VAR", raising=False)
    if content is not None:
        (tmp_path / "token").write_text(content)
    cfg = serve_config({k: v.format(dir=tmp_path) for k, v in settings.items()})
    with pytest.raises(ConfigError, match=message):
        read_token(cfg)


def test_a_cluster_not_started_here_gets_the_token_as_a_private_file_not_in_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKEN_VAR", "s3cr3t")
    cfg, folder = token_file_for_cluster(serve_config({"auth_token_env": "TOKEN_VAR"}))
    try:
        assert folder is not None and cfg.auth_token_file == str(folder / "token")
        assert (os.stat(folder).st_mode & 0o777, os.stat(cfg.auth_token_file).st_mode & 0o777) == (
            0o700,
            0o600,
        )
        assert "s3cr3t" not in repr(config_dict(cfg)) and "s3cr3t" not in repr(service_config(cfg))
        assert read_token(cfg) == "s3cr3t"
    finally:
        if folder is not None:
            for item in folder.iterdir():
                item.unlink()
            folder.rmdir()
    given = serve_config({"auth_token_file": "/run/secrets/token", "auth_token_env": "TOKEN_VAR"})
    assert token_file_for_cluster(given) == (given, None), "an explicit token file is left as it is"
    monkeypatch.delenv("TOKEN_VAR")
    unset = serve_config({"auth_token_env": "TOKEN_VAR"})
    assert token_file_for_cluster(unset) == (unset, None), (
        "nothing to hand over: the cluster's own env is used"
    )
