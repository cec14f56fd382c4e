"""Replay a recorded run's tasks on P workers: the wall time it would take with more of them.

The record is what benchmarks/_task_record.py writes: each finished task's submission time,
compute start and stop, and dependencies. The model:

* **Durations.** Each task keeps its measured compute time (stop - start), with the
  contention of the measured machine (durations measured on an oversubscribed machine stay
  inflated). Where tasks run has no effect: data locality is left out.
* **Slots.** A worker runs as many tasks at once as a worker of the measured run had threads
  (threads as slots): P workers are P x threads slots.
* **Explicit dependencies.** A task is ready once every recorded dependency has finished;
  dependencies outside the record (scattered data, results already held) are there from the
  start. A key computed more than once depends on its last run that stopped before the
  dependent started.
* **Implied dependency on the client.** The scheduler does not see why the client submitted a
  task when it did: often only after it had received an earlier result (the next
  resolution's clustering after the pair tests, the next stage after a reduction). So each
  task gets an implied dependency on its *trigger*, the recorded task that stopped last
  before the task was submitted, and the client's *reaction gap*, submission minus the
  trigger's stop: in the replay it is ready no earlier than its trigger's replayed finish
  plus the gap. The client's serial work between graphs stays on the critical path at any
  P, as Amdahl's serial fraction. The same accounts for the client's time outside tasks:
  tasks submitted before any task stopped are triggered by the process start (their gap is
  the start-up: imports, reading the input, starting the cluster), and the process exit is
  a task of no duration submitted at the exit, after the last task and its own gap (writing
  the output, closing the cluster). A submission that did not wait for its trigger (the
  client submitting while tasks ran) is tied to it all the same: the model errs on the
  serial side.
* **Dispatch delay.** A task that waited in the measured run although it was ready (submitted,
  its dependencies finished) and its worker had a thread free waited for something else:
  fetching its dependencies from another worker, deserializing the task, a worker's first
  import of a module, a scheduler slowed by the client's threads. Each task keeps that
  delay, measured, before it can start (without holding a slot).
* **List scheduling.** Whenever a slot is free, the ready task that started first in the
  measured run takes it (greedy and work-conserving, in the measured order).

The projected wall time runs from the process start to its exit; replayed with the measured
number of workers, it should come close to the measured wall (issue 26: within 15% at P = 2).
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from math import inf
from typing import Any


@dataclass(frozen=True)
class Task:
    """One recorded task: epoch seconds of its submission and of its compute interval, and its
    dispatch delay (seconds)."""

    key: str
    submitted: float
    start: float
    stop: float
    dependencies: tuple[str, ...] = ()
    delay: float = 0.0

    @property
    def duration(self) -> float:
        return self.stop - self.start


def tasks_of(record: dict[str, Any]) -> list[Task]:
    """The tasks of a record, with their dispatch delays; a task whose submission was not seen
    counts as submitted when it started."""
    rows = record["tasks"]
    tasks = [
        Task(
            t["key"],
            t["start"] if t["submitted"] is None else t["submitted"],
            t["start"],
            t["stop"],
            tuple(t["dependencies"]),
        )
        for t in rows
    ]
    threads = [record["threads"].get(t["worker"], 1) for t in rows]
    delays = _dispatch_delays(tasks, [t["worker"] for t in rows], threads)
    return [replace(task, delay=delay) for task, delay in zip(tasks, delays, strict=True)]


def _dispatch_delays(tasks: Sequence[Task], workers: list[str], threads: list[int]) -> list[float]:
    """How long each task waited after it was ready and a thread of its worker was free: its
    worker had a thread free once fewer than its threads of the tasks that started there
    before it were still running."""
    predecessors = _dependencies(tasks)
    latest: dict[str, list[float]] = defaultdict(list)  # per worker: its threads' last stops
    delays = [0.0] * len(tasks)
    for i in sorted(range(len(tasks)), key=lambda i: tasks[i].start):
        task, stops = tasks[i], latest[workers[i]]
        free = stops[0] if len(stops) == threads[i] else -inf
        ready = max([task.submitted, free, *(tasks[j].stop for j in predecessors[i])])
        delays[i] = max(0.0, task.start - ready)
        heapq.heappush(stops, task.stop)
        if len(stops) > threads[i]:
            heapq.heappop(stops)
    return delays


def threads_per_worker(record: dict[str, Any]) -> int:
    """Threads of the measured run's largest worker (LocalCluster's workers are all equal)."""
    return max(record["threads"].values(), default=1)


def idle_seconds(tasks: Sequence[Task], started: float, ended: float) -> float:
    """Seconds of the measured run from ``started`` to ``ended`` with no task running: the
    client's (and scheduler's) time alone, which more workers do not shorten."""
    covered, reach = 0.0, started
    for task in sorted(tasks, key=lambda t: t.start):
        covered += max(0.0, task.stop - max(task.start, reach))
        reach = max(reach, task.stop)
    return ended - started - covered


def replay(tasks: Sequence[Task], slots: int, started: float, ended: float) -> float:
    """Projected seconds from process start (``started``) to exit (``ended``, both epoch
    seconds of the measured run) with ``slots`` tasks at once, by the model above."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1 (got {slots})")
    order = sorted(range(len(tasks)), key=lambda i: (tasks[i].stop, i))
    stops = [tasks[i].stop for i in order]
    predecessors = _dependencies(tasks)
    # Trigger: the task that stopped last before the submission, strictly earlier in stop order
    # (so triggers and dependencies form no cycle); None: the process start.
    trigger: dict[int, int | None] = {}
    for position, i in enumerate(order):
        before = min(bisect_right(stops, tasks[i].submitted), position)
        trigger[i] = order[before - 1] if before else None
    dependents: dict[int, list[int]] = defaultdict(list)
    waiting: dict[int, int] = {}  # dependencies and trigger not finished yet
    earliest: dict[int, float] = {}  # replayed time before which each task cannot be ready
    for i, task in enumerate(tasks):
        for j in predecessors[i]:
            dependents[j].append(i)
        if trigger[i] is not None:
            dependents[trigger[i]].append(i)
        waiting[i] = len(predecessors[i]) + (trigger[i] is not None)
        earliest[i] = task.submitted - started if trigger[i] is None else 0.0
    finish = _list_schedule(tasks, slots, trigger, dependents, waiting, earliest)
    if len(finish) < len(tasks):
        raise ValueError("the record's dependencies form a cycle: its times are inconsistent")
    if not tasks:
        return ended - started
    last = order[-1]
    return max(max(finish.values()), finish[last] + ended - tasks[last].stop)


def _dependencies(tasks: Sequence[Task]) -> list[list[int]]:
    """Each task's recorded dependencies, as indices: for a key computed more than once, its
    last run that stopped before the dependent started."""
    runs: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for i, task in enumerate(tasks):
        runs[task.key].append((task.stop, i))
    for instances in runs.values():
        instances.sort()
    found = []
    for task in tasks:
        indices = []
        for key in task.dependencies:
            instances = runs.get(key, [])
            before = bisect_right(instances, (task.start, len(tasks)))
            if before:
                indices.append(instances[before - 1][1])
        found.append(indices)
    return found


def _list_schedule(
    tasks: Sequence[Task],
    slots: int,
    trigger: dict[int, int | None],
    dependents: dict[int, list[int]],
    waiting: dict[int, int],
    earliest: dict[int, float],
) -> dict[int, float]:
    """Replayed finish time of every task: event by event, free slots go to the ready tasks
    that started first in the measured run."""
    # pending: (time it can start, task); ready: (measured start, task)
    pending = [(earliest[i] + tasks[i].delay, i) for i in waiting if not waiting[i]]
    heapq.heapify(pending)
    ready: list[tuple[float, int]] = []
    running: list[tuple[float, int]] = []  # (replayed finish, task)
    finish: dict[int, float] = {}
    now, free = 0.0, slots
    while pending or ready or running:
        while pending and pending[0][0] <= now:
            _, i = heapq.heappop(pending)
            heapq.heappush(ready, (tasks[i].start, i))
        while ready and free:
            _, i = heapq.heappop(ready)
            heapq.heappush(running, (now + tasks[i].duration, i))
            free -= 1
        now = min(q[0][0] for q in (pending, running) if q)
        while running and running[0][0] <= now:
            done, j = heapq.heappop(running)
            finish[j], free = done, free + 1
            for i in dependents[j]:
                gap = tasks[i].submitted - tasks[j].stop if trigger[i] == j else 0.0
                earliest[i] = max(earliest[i], done + gap)
                waiting[i] -= 1
                if not waiting[i]:
                    heapq.heappush(pending, (earliest[i] + tasks[i].delay, i))
    return finish
