"""The Dask client a run works on: an existing scheduler, a local cluster, SLURM or Kubernetes.

Following dask conventions, the scheduler address comes from ``--scheduler``, else from the
``scheduler-address`` dask config key (which ``DASK_SCHEDULER_ADDRESS`` sets); a ``tls://``
address uses dask's security configuration (``distributed.comm.tls.*``). Without an address a
cluster of the chosen kind is started for the run and shut down after it:

* ``local``: worker processes on this machine, scheduler and dashboard bound to 127.0.0.1;
* ``slurm``: workers as SLURM jobs through dask-jobqueue's ``SLURMCluster``;
* ``kubernetes``: worker pods through the dask-kubernetes operator's ``KubeCluster``.

Options left unset take their values from dask config (``jobqueue.slurm.*`` as in a
jobqueue.yaml, ``kubernetes.*``), as those libraries do.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dask.config
from distributed import Client, LocalCluster
from distributed.security import Security

from recall_dask.choices import CLUSTER_KINDS
from recall_dask.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    """Where to run: an external scheduler address, or the kind and shape of a new cluster.

    ``n_workers`` counts local worker processes or Kubernetes worker pods; ``jobs`` counts
    SLURM worker jobs. ``None`` leaves a SLURM or Kubernetes option to dask config.
    """

    scheduler: str | None = None
    kind: str = "local"
    n_workers: int = 2
    threads_per_worker: int | None = None
    memory_limit: str = "auto"
    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    cores: int | None = None
    memory: str | None = None
    jobs: int = 1
    image: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in CLUSTER_KINDS:
            raise InputError(f"--cluster must be one of {', '.join(CLUSTER_KINDS)}")
        for option, value in [
            ("--n-workers", self.n_workers),
            ("--threads-per-worker", self.threads_per_worker),
            ("--cores", self.cores),
            ("--jobs", self.jobs),
        ]:
            if value is not None and value < 1:
                raise InputError(f"{option} must be >= 1 (got {value})")

    def scheduler_address(self) -> str | None:
        """The scheduler to connect to: ``--scheduler``, else dask config's
        ``scheduler-address`` (``DASK_SCHEDULER_ADDRESS``); ``None`` for a new cluster."""
        return self.scheduler or dask.config.get("scheduler-address", None)


@contextmanager
def dask_client(config: ClusterConfig) -> Iterator[Client]:
    """A connected client for the duration of a run; a cluster started here is shut down after."""
    address = config.scheduler_address()
    if address:
        with _connected(address) as client:
            logger.info("connected to scheduler %s (dashboard %s)", address, client.dashboard_link)
            yield client
        return
    with _started(config) as cluster, Client(cluster) as client:
        logger.info("%s; dashboard %s", _describe(config), client.dashboard_link)
        if config.kind != "local":
            logger.info("waiting for the first worker to join ...")
            client.wait_for_workers(1)
        yield client


def _connected(address: str) -> Client:
    """A client of the scheduler at ``address``; failing to reach it is a user error."""
    security = Security()  # from dask config: distributed.comm.tls.*
    tls_configured = security.get_connection_args("client")["ssl_context"] is not None
    if address.startswith("tls://") and not tls_configured:
        raise InputError(
            f"{address} needs TLS settings: set distributed.comm.tls.ca-file, "
            "distributed.comm.tls.client.cert and .client.key in dask config (or "
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE etc.)"
        )
    try:
        return Client(address, security=security)
    except (OSError, TimeoutError, ValueError) as error:
        raise InputError(f"cannot reach the Dask scheduler at {address}: {error}") from error


def _started(config: ClusterConfig) -> Any:
    """A new cluster of ``config.kind``; options the cluster rejects are a user error."""
    try:
        return _CLUSTERS[config.kind](config)
    except ValueError as error:
        raise InputError(f"--cluster {config.kind}: {error}") from error


def _local(config: ClusterConfig) -> LocalCluster:
    return LocalCluster(
        n_workers=config.n_workers,
        threads_per_worker=_local_threads(config),
        memory_limit=config.memory_limit,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )


def _local_threads(config: ClusterConfig) -> int:
    return config.threads_per_worker or max(1, (os.cpu_count() or 1) // config.n_workers)


def _slurm(config: ClusterConfig) -> Any:
    jobqueue = _optional("dask_jobqueue", "slurm")
    options = _given(
        queue=config.queue,
        account=config.account,
        walltime=config.walltime,
        cores=config.cores,
        memory=config.memory,
    )
    cluster = jobqueue.SLURMCluster(**options)
    cluster.scale(jobs=config.jobs)
    return cluster


def _kubernetes(config: ClusterConfig) -> Any:
    operator = _optional("dask_kubernetes.operator", "kubernetes")
    return operator.KubeCluster(**_given(image=config.image, n_workers=config.n_workers))


_CLUSTERS: dict[str, Callable[[ClusterConfig], Any]] = {
    "local": _local,
    "slurm": _slurm,
    "kubernetes": _kubernetes,
}


def _given(**options: Any) -> dict[str, Any]:
    """The options set on the command line; the cluster class reads the rest from dask config."""
    return {name: value for name, value in options.items() if value is not None}


def _optional(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise InputError(
            f"--cluster {extra} needs {error.name}: pip install 'recall-dask[{extra}]'"
        ) from error


def _describe(config: ClusterConfig) -> str:
    if config.kind == "local":
        threads = _local_threads(config)
        return f"local Dask cluster: {config.n_workers} worker(s) x {threads} thread(s)"
    if config.kind == "slurm":
        return f"SLURM cluster: {config.jobs} worker job(s) submitted"
    return f"Kubernetes cluster: {config.n_workers} worker pod(s) requested"
