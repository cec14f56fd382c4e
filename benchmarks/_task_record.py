"""Scheduler preload that records every finished task, for benchmarks/scaleout.py's replay.

Loaded by the scheduler that a run starts (``DASK_DISTRIBUTED__SCHEDULER__PRELOAD=<this
file>``: dask config ``distributed.scheduler.preload``, which a ``LocalCluster``'s scheduler
reads too; an external scheduler takes it as ``dask scheduler --preload``), it needs nothing
of the package, so it records any commit's runs unchanged. For each task that finishes (to
``memory`` or ``erred``) it keeps: key, group (the key's prefix), worker, compute start and
stop (the worker's ``startstops``), the keys of its dependencies and when the client
submitted it (its last ``released -> waiting``). When the scheduler closes it writes one
JSON object to ``$RECALL_TASK_RECORD``::

    {"opened": <scheduler start, epoch s>, "closed": ..., "threads": {worker: nthreads},
     "tasks": [{"key", "group", "worker", "state", "submitted", "start", "stop",
                "dependencies"}, ...]}

Tasks without a compute interval (data scattered by the client, results that a worker
already held) are left out. All times are ``time.time()`` of this machine's processes.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

#: Environment variable naming the JSON file to write.
RECORD_VARIABLE = "RECALL_TASK_RECORD"


class TaskRecorder(SchedulerPlugin):
    """Keeps each finished task's times and dependencies; writes them all on close."""

    def __init__(self, scheduler: Any, path: str) -> None:
        self.scheduler, self.path = scheduler, path
        self.opened = time.time()
        self.submitted: dict[str, float] = {}
        self.threads: dict[str, int] = {}
        self.tasks: list[dict[str, Any]] = []

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self.threads[worker] = scheduler.workers[worker].nthreads

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start == "released" and finish == "waiting":
            self.submitted[str(key)] = time.time()
        elif finish in ("memory", "erred"):
            computed = [s for s in kwargs.get("startstops", ()) if s["action"] == "compute"]
            task = self.scheduler.tasks.get(key)
            if computed and task is not None:
                self.tasks.append(
                    {
                        "key": str(key),
                        "group": task.prefix.name,
                        "worker": kwargs.get("worker"),
                        "state": finish,
                        "submitted": self.submitted.get(str(key)),
                        "start": computed[0]["start"],
                        "stop": computed[-1]["stop"],
                        "dependencies": [str(d.key) for d in task.dependencies],
                    }
                )

    async def close(self) -> None:
        record = {
            "opened": self.opened,
            "closed": time.time(),
            "threads": self.threads,
            "tasks": self.tasks,
        }
        with open(self.path, "w") as handle:
            json.dump(record, handle)


def dask_setup(scheduler: Any) -> None:
    scheduler.add_plugin(TaskRecorder(scheduler, os.environ[RECORD_VARIABLE]), name="task-record")
