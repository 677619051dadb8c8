"""Serve application builders and the local deployment entry point.

Stable import paths for Ray Serve configs (``serve run``, ``serve deploy``, a KubeRay RayService's
``serveConfigV2``):

- ``tvifm.serve.app:build_app`` -- an application *builder*: Serve calls it with the application's
  ``args`` mapping, whose keys are :class:`~tvifm.serve.config.ServeConfig` fields (sections such as
  ``embedder`` are nested mappings). This is the path to use with arguments.
- ``tvifm.serve.app:app`` -- the application built from the defaults (``models:/tvifm@production``,
  gallery under ``runs/gallery``); ``serve build tvifm.serve.app:app`` generates a config from it (the
  ``serve build`` command of Ray 2.60 accepts only built applications, not builders with arguments;
  :func:`service_config` writes a ready ``serveConfigV2`` with ``build_app`` and ``args`` instead).

Importing this module has no side effects and does not import Ray; ``app`` is built on first access.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tvifm.config.schema import ScalingConfig, ServeConfig
from tvifm.serve.config import config_dict, serve_config

if TYPE_CHECKING:
    from ray.serve import Application

APP_NAME = "tvifm"
BUILDER_PATH = "tvifm.serve.app:build_app"


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder: ``args`` are :class:`ServeConfig` fields (validated)."""
    return build_application(serve_config(args or {}))


def build_application(cfg: ServeConfig, actor_env: Mapping[str, str] | None = None) -> Application:
    """The three-deployment application of ``cfg``.

    ``actor_env`` adds environment variables to every replica (e.g. forwarding the auth token variable
    to replicas of an already running Ray cluster).
    """
    from tvifm.serve.deployments import Embedder, GalleryIndex, Ingress

    conf = config_dict(cfg)
    embedder = Embedder.options(**scaling_options(cfg.embedder, actor_env)).bind(conf)
    index_actor = actor_options(cfg.index_num_cpus, 0.0, actor_env)
    index = GalleryIndex.options(
        num_replicas=1, max_ongoing_requests=cfg.index_max_ongoing_requests, ray_actor_options=index_actor
    ).bind(conf, embedder)
    return Ingress.options(**scaling_options(cfg.ingress, actor_env)).bind(conf, embedder, index)


def actor_options(num_cpus: float, num_gpus: float, env: Mapping[str, str] | None) -> dict[str, Any]:
    """``ray_actor_options`` of one deployment."""
    opts: dict[str, Any] = {"num_cpus": num_cpus}
    if num_gpus:
        opts["num_gpus"] = num_gpus
    if env:
        opts["runtime_env"] = {"env_vars": dict(env)}
    return opts


def scaling_options(scaling: ScalingConfig, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Deployment options (replicas or autoscaling, resources) from a :class:`ScalingConfig`."""
    opts: dict[str, Any] = {
        "max_ongoing_requests": scaling.max_ongoing_requests,
        "ray_actor_options": actor_options(scaling.num_cpus, scaling.num_gpus, env),
    }
    if scaling.autoscale:
        opts["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
        }
    else:
        opts["num_replicas"] = scaling.num_replicas
    return opts


def service_config(cfg: ServeConfig, host: str = "0.0.0.0") -> dict[str, Any]:
    """A Serve config (the ``serveConfigV2`` of a RayService) deploying ``build_app`` with ``cfg`` as args.

    Validated against Ray's own ``ServeDeploySchema``.
    """
    from ray.serve.schema import ServeDeploySchema

    config = {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": cfg.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": cfg.route_prefix,
                "import_path": BUILDER_PATH,
                "args": config_dict(cfg),
            }
        ],
    }
    ServeDeploySchema.model_validate(config)
    return config


def service_url(cfg: ServeConfig) -> str:
    """The base URL the local deployment listens on."""
    prefix = cfg.route_prefix.rstrip("/")
    return f"http://{cfg.host}:{cfg.port}{prefix}"


def run_service(
    cfg: ServeConfig,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Deploy on Ray (connecting to ``address``, else a running cluster, else a new local one), print the
    URL and block until Ctrl-C/SIGTERM (or ``stop``); then remove the application, and shut Serve and
    Ray down if this call started them."""
    import ray
    from ray import serve

    started = _init_ray(ray, address, num_cpus)
    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        env = _token_env(cfg)
        serve.run(build_application(cfg, env), name=APP_NAME, route_prefix=cfg.route_prefix)
        print(
            f"tvifm retrieval service ready at {service_url(cfg)} (OpenAPI: {service_url(cfg)}/docs)",
            flush=True,
        )
        if ready is not None:
            ready.set()
        _wait(stop or threading.Event())
    finally:
        _shutdown(ray, serve, started)


def _init_ray(ray: Any, address: str | None, num_cpus: int | None) -> bool:
    if ray.is_initialized():
        return False
    if address is None:
        with contextlib.suppress(ConnectionError):
            ray.init(address="auto", log_to_driver=False)
            return False
    if address not in (None, "local"):
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True


def _token_env(cfg: ServeConfig) -> dict[str, str] | None:
    import os

    if cfg.auth_token_env and os.environ.get(cfg.auth_token_env):
        return {cfg.auth_token_env: os.environ[cfg.auth_token_env]}
    return None


def _wait(stop: threading.Event) -> None:
    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
    while not stop.wait(0.5):
        pass


def _shutdown(ray: Any, serve: Any, started: bool) -> None:
    with contextlib.suppress(Exception):
        if started:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
    if started:
        ray.shutdown()
    print("tvifm retrieval service stopped", flush=True)


def __getattr__(name: str) -> Any:
    """``app``: the application of the default :class:`ServeConfig`, built on first access."""
    if name == "app":
        return build_app({})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
