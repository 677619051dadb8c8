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
import dataclasses
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
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


def build_application(cfg: ServeConfig) -> Application:
    """The three-deployment application of ``cfg``.

    Nothing secret goes into it: the deployments get ``cfg`` (which only says *where* the bearer token is,
    see :func:`~tvifm.serve.config.read_token`) and no runtime environment, because Ray writes both to
    its logs.
    """
    from tvifm.serve.deployments import Embedder, GalleryIndex, Ingress

    conf = config_dict(cfg)
    embedder = Embedder.options(**scaling_options(cfg.embedder)).bind(conf)
    index_actor = actor_options(cfg.index_num_cpus, 0.0)
    index = GalleryIndex.options(
        num_replicas=1, max_ongoing_requests=cfg.index_max_ongoing_requests, ray_actor_options=index_actor
    ).bind(conf, embedder)
    return Ingress.options(**scaling_options(cfg.ingress)).bind(conf, embedder, index)


def actor_options(num_cpus: float, num_gpus: float) -> dict[str, Any]:
    """``ray_actor_options`` of one deployment."""
    opts: dict[str, Any] = {"num_cpus": num_cpus}
    if num_gpus:
        opts["num_gpus"] = num_gpus
    return opts


def scaling_options(scaling: ScalingConfig) -> dict[str, Any]:
    """Deployment options (replicas or autoscaling, resources) from a :class:`ScalingConfig`."""
    opts: dict[str, Any] = {
        "max_ongoing_requests": scaling.max_ongoing_requests,
        "ray_actor_options": actor_options(scaling.num_cpus, scaling.num_gpus),
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

    if cfg.auth_token_file:  # replicas run in other working directories
        cfg = dataclasses.replace(cfg, auth_token_file=os.path.abspath(cfg.auth_token_file))
    started = _init_ray(ray, address, num_cpus)
    token_dir: Path | None = None
    try:
        if not started:  # the replicas do not inherit this process's environment
            cfg, token_dir = token_file_for_cluster(cfg)
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        serve.run(build_application(cfg), name=APP_NAME, route_prefix=cfg.route_prefix)
        print(
            f"tvifm retrieval service ready at {service_url(cfg)} (OpenAPI: {service_url(cfg)}/docs)",
            flush=True,
        )
        if ready is not None:
            ready.set()
        _wait(stop or threading.Event())
    finally:
        _shutdown(ray, serve, started)
        if token_dir is not None:
            shutil.rmtree(token_dir, ignore_errors=True)


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


def token_file_for_cluster(cfg: ServeConfig) -> tuple[ServeConfig, Path | None]:
    """``cfg`` for replicas on a Ray cluster this process did not start, and the folder to remove later.

    Replicas there do not see this process's environment, and a token handed over in a runtime
    environment would land in Ray's logs. So when ``serve.auth_token_env`` names a variable set here and
    no ``serve.auth_token_file`` is given, the token is written to a file only this user can read (mode
    0600 in a fresh 0700 folder) and ``serve.auth_token_file`` points at it. That serves replicas on this
    machine (a local cluster); where the file does not exist (another machine), the replicas fall back to
    the variable in their own environment (:func:`~tvifm.serve.config.read_token`).
    """
    token = os.environ.get(cfg.auth_token_env or "", "").strip()
    if cfg.auth_token_file or not token:
        return cfg, None
    folder = Path(tempfile.mkdtemp(prefix="tvifm-serve-token-"))
    path = folder / "token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token)
    return dataclasses.replace(cfg, auth_token_file=str(path)), folder


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
