"""Scheduler preload for the worker-loss test: kills a worker for good mid-computation.

When the first task whose key names ``$RECALL_KILL_PREFIX`` is assigned to a worker (a key
may be fused with others, as ``pair_tests_of_block-finalize-...``),
that worker's whole process group (nanny included) gets SIGKILL, exactly as if its machine
had gone away. What was killed is written as JSON to ``$RECALL_KILL_RECORD``.
"""

import json
import os
import signal

from distributed.diagnostics.plugin import SchedulerPlugin


class KillWorkerRunningPrefix(SchedulerPlugin):
    def __init__(self, scheduler, prefix, record):
        self.scheduler, self.prefix, self.record = scheduler, prefix, record
        self.done = False

    def transition(self, key, start, finish, *args, **kwargs):
        name = key if isinstance(key, str) else key[0]
        if self.done or finish != "processing" or self.prefix not in str(name):
            return
        worker = self.scheduler.tasks[key].processing_on
        self.done = True
        with open(self.record, "w") as f:
            json.dump({"key": str(name), "worker": worker.address, "pid": worker.pid}, f)
        os.killpg(os.getpgid(worker.pid), signal.SIGKILL)


def dask_setup(scheduler):
    plugin = KillWorkerRunningPrefix(
        scheduler, os.environ["RECALL_KILL_PREFIX"], os.environ["RECALL_KILL_RECORD"]
    )
    scheduler.add_plugin(plugin, name="kill-worker")
