"""The Dask client a run works on: an existing scheduler, or a local cluster on 127.0.0.1.

Following dask conventions, the scheduler address comes from ``--scheduler``, else from the
``scheduler-address`` dask config key (which ``DASK_SCHEDULER_ADDRESS`` sets). Without one,
a local cluster is started bound to 127.0.0.1 only, its dashboard included.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dask.config
from distributed import Client, LocalCluster

from recall_dask.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    """Where to run: an external scheduler address, or the shape of a local cluster."""

    scheduler: str | None = None
    n_workers: int = 2
    threads_per_worker: int | None = None
    memory_limit: str = "auto"

    def __post_init__(self) -> None:
        if self.n_workers < 1:
            raise InputError(f"--n-workers must be >= 1 (got {self.n_workers})")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise InputError(f"--threads-per-worker must be >= 1 (got {self.threads_per_worker})")

    def scheduler_address(self) -> str | None:
        return self.scheduler or dask.config.get("scheduler-address", None)


@contextmanager
def dask_client(config: ClusterConfig) -> Iterator[Client]:
    """A connected client for the duration of a run; a local cluster is shut down after."""
    address = config.scheduler_address()
    if address:
        with Client(address) as client:
            logger.info("connected to scheduler %s (dashboard %s)", address, client.dashboard_link)
            yield client
        return
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // config.n_workers)
    with (
        LocalCluster(
            n_workers=config.n_workers,
            threads_per_worker=threads,
            memory_limit=config.memory_limit,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        logger.info(
            "local Dask cluster: %d worker(s) x %d thread(s); dashboard %s",
            config.n_workers,
            threads,
            client.dashboard_link,
        )
        yield client
