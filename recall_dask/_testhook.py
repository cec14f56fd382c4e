"""A test hook that kills a run at a stage boundary, so that resuming can be tested without
timers: ``RECALL_DASK_TEST_KILL_AT=<point>[:<n>]``.

Not for users. The tests of ``--resume`` start the command line in a session of its own and
set the variable; the run then dies as a machine losing power would, at the ``n``-th time
(default: the first) a process passes ``point``, with no chance to clean up.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

#: Environment variable naming the point to die at.
KILL_AT = "RECALL_DASK_TEST_KILL_AT"

_passed: Counter[str] = Counter()
_lock = threading.Lock()


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this process's whole group (the command line, its local cluster's
    workers) at the ``n``-th call whose ``name`` is ``point`` or starts with ``point-``, where
    ``RECALL_DASK_TEST_KILL_AT`` is ``point[:n]``. Does nothing when the variable is unset.

    Called where a stage's result becomes final (:mod:`recall_dask.io.checkpoints`), after
    each row chunk a work store task writes, and as each clustering task starts
    (``clustering``), in whichever process runs it: workers inherit the variable, and the group
    takes the client down with them. Counting is per process.
    """
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    point, _, times = wanted.partition(":")
    if name != point and not name.startswith(f"{point}-"):
        return
    with _lock:
        _passed[point] += 1
        if _passed[point] == int(times or 1):
            os.killpg(os.getpgrp(), signal.SIGKILL)
