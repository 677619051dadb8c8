"""Connecting to Ray, shared by the jobs (captioning, training, pipeline): one place decides whether to
join a cluster or start a local Ray, and only a Ray started here is shut down."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def ray_session(num_cpus: int | None = None, address: str = "") -> Iterator[None]:
    """Use the running Ray; else connect to ``address`` / ``RAY_ADDRESS`` (e.g. inside ``ray job submit``
    or a RayJob); else start a local Ray with ``num_cpus`` (default: every core). Ray started or
    connected here is shut down when the block ends."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        cpus = num_cpus or os.cpu_count() or 1
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
