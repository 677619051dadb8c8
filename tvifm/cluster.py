"""Connecting to Ray, shared by the jobs (captioning, training, pipeline): one place decides whether to
join a cluster or start a local Ray, and only a Ray started here is shut down. Inside
:func:`tvifm.logs.quiet_frameworks`, what Ray prints goes to the job's log file."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tvifm import logs
from tvifm.errors import TvifmError


def _import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as err:
        if err.name != "ray":
            raise
        raise TvifmError(
            "Ray is not installed; this job needs it: pip install 'tvifm[caption]' (captioning), "
            "'tvifm[train]' (training) or 'tvifm[all]'"
        ) from err
    return ray


@contextmanager
def ray_session(num_cpus: int | None = None, address: str = "") -> Iterator[None]:
    """Use the running Ray; else connect to ``address`` / ``RAY_ADDRESS`` (e.g. inside ``ray job submit``
    or a RayJob); else start a local Ray with ``num_cpus`` (default: every core). Ray started or
    connected here is shut down when the block ends."""
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        kwargs: dict[str, Any] = {"address": address}
    else:
        cpus = num_cpus or os.cpu_count() or 1
        kwargs = {"address": "local", "num_cpus": cpus, "include_dashboard": False}
    with logs.ray_output() as output:
        ray.init(logging_level=logging.WARNING, **kwargs)
        output.started()
        try:
            yield
        finally:
            ray.shutdown()
