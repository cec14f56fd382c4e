"""Where a draw's neighbor graph and clusterings run: on the Dask cluster's workers, or on the
client's threads when the run has no distributed client.

Each draw's embedding, its neighbor graph and every clustering of that graph are tasks. With
a distributed client (every command-line run, and any run inside ``dask_client`` or with a
``distributed.Client`` active) they run on workers: the embedding and graph stay there (or
in the work store), and the client receives only each clustering's labels, so a bigger
cluster clusters more draws at once. Without one (an in-memory AnnData on dask's threaded
scheduler) the same tasks run on a pool of the client's threads. Either way the functions
and their inputs are the same, so are the labels.

A task's name (its key prefix) is what the Dask dashboard's task stream shows:
``recall-neighbor-graph``, ``recall-cluster-draw<m>-iteration<n>``, ``recall-harmony`` and
so on; an embedding is the dask computation of its PCA's projection, on the workers too.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol
from uuid import uuid4

import distributed

from recall_dask import config
from recall_dask.errors import InputError
from recall_dask.progress import compute, distributed_client, watch

logger = logging.getLogger(__name__)

#: What a clustering task holds beyond its graph, per byte of the graph: Louvain's and
#: GroupSingletons' arrays over the same edges and cells. ``benchmarks/clustering_memory.py``
#: measured 2.1 at 200,000 and at a million cells; 2.5 leaves some headroom.
CLUSTERING_MEMORY_PER_GRAPH_BYTE = 2.5


class StopSignal(Protocol):
    """Set when a draw has stopped, so that its clusterings still running end at their next
    random start (a ``threading.Event``, or a ``distributed.Event`` that workers can read)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


class Tasks(Protocol):
    """Runs a draw's tasks: ``submit`` a function of values or futures, ``compute`` a dask
    collection, each to a future whose ``result()`` is the value."""

    #: Clusterings that can run at once.
    slots: int

    def submit(self, name: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...

    def compute(self, collection: Any) -> Any: ...

    def wait(self, future: Any) -> None: ...

    def stop_signal(self) -> StopSignal: ...

    def check_graph_fits(self, graph_bytes: int) -> None: ...

    def close(self) -> None: ...


class ClientThreads:
    """The tasks on a pool of the client's threads: ``recall.clustering-threads`` of them (by
    default one per core, at most four)."""

    def __init__(self, threads: int) -> None:
        self.slots = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="recall")

    def submit(self, name: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        args, kwargs = _results(args), _results(kwargs)
        return self._pool.submit(func, *args, **kwargs)

    def compute(self, collection: Any) -> Future:
        done: Future = Future()
        done.set_result(compute(collection)[0])
        return done

    def wait(self, future: Future) -> None:
        """Wait for a task; raise its error."""
        future.result()

    def stop_signal(self) -> threading.Event:
        return threading.Event()

    def check_graph_fits(self, graph_bytes: int) -> None:
        """The client's own memory is the user's to size: nothing to check."""

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class WorkerTasks:
    """The tasks on the workers of a distributed client; the scheduler places each one (a
    clustering next to its graph, when the graph is in a worker's memory)."""

    def __init__(self, client: distributed.Client) -> None:
        self.client = client
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        self.slots = max(1, sum(worker["nthreads"] for worker in workers))
        self._limits = [worker.get("memory_limit") or 0 for worker in workers]

    def submit(
        self, name: str, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> distributed.Future:
        return self.client.submit(func, *args, key=f"{name}-{uuid4().hex}", pure=False, **kwargs)

    def compute(self, collection: Any) -> distributed.Future:
        future = self.client.compute(collection)
        watch(future)
        return future

    def wait(self, future: distributed.Future) -> None:
        """Wait for a task where it runs (its result stays there); raise its error."""
        distributed.wait(future)
        if future.status == "error":
            future.result()

    def stop_signal(self) -> distributed.Event:
        return distributed.Event(f"recall-stop-{uuid4().hex}", client=self.client)

    def check_graph_fits(self, graph_bytes: int) -> None:
        """Raise a clear error before clustering a graph that no worker can hold: a clustering
        task holds its graph and Louvain's arrays over it, about
        :data:`CLUSTERING_MEMORY_PER_GRAPH_BYTE` times the graph's bytes more."""
        limits = [limit for limit in self._limits if limit]
        needed = graph_bytes * (1 + CLUSTERING_MEMORY_PER_GRAPH_BYTE)
        if limits and needed > max(limits):
            raise InputError(
                f"clustering a neighbor graph of {graph_bytes / 2**30:.2f} GiB needs about "
                f"{needed / 2**30:.2f} GiB on one worker, more than the largest worker memory "
                f"limit ({max(limits) / 2**30:.2f} GiB): give the workers more memory "
                "(--memory-limit, or --memory per SLURM job)"
            )

    def close(self) -> None:
        """Nothing to release: the stop signals stay set, so that a clustering still running
        on a worker (made ahead for a draw that stopped) ends at its next random start."""


def draw_tasks() -> ClientThreads | WorkerTasks:
    """Where this run's draw tasks go: the workers of the distributed client dask uses, if
    any, else the client's threads (``recall.clustering-threads``)."""
    client = distributed_client()
    return ClientThreads(clustering_threads()) if client is None else WorkerTasks(client)


def clustering_threads() -> int:
    """Tasks run at once on the client's threads: the ``recall.clustering-threads`` knob, by
    default (null) one per core, at most four."""
    threads = config.get("clustering-threads")
    return max(1, min(4, os.cpu_count() or 1)) if threads is None else threads


def where_running() -> str:
    """The worker a task runs on (its name), or the client outside a worker."""
    try:
        worker = distributed.get_worker()
    except ValueError:
        return "the client"
    return f"worker {worker.name}" if worker.name is not None else worker.address


def _results(values: Any) -> Any:
    """``values`` (a tuple, list or dict) with every future among them replaced by its result,
    as distributed does with a task's arguments."""
    if isinstance(values, dict):
        return {key: _results(value) for key, value in values.items()}
    if isinstance(values, list | tuple):
        return type(values)(_results(value) for value in values)
    return values.result() if isinstance(values, Future) else values
