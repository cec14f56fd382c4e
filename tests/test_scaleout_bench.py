"""The pure parts of benchmarks/scaleout.py: the task replay (benchmarks/_replay.py) and the
CPU accounting of a process tree (benchmarks/_measure.py), on hand-made records."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _measure import TreeUsage, measure  # noqa: E402
from _replay import Task, idle_seconds, replay, tasks_of  # noqa: E402

#: a -> b -> c, 1 + 2 + 3 s, all submitted at once at the start.
CHAIN = [
    Task("a", 0, 0, 1),
    Task("b", 0, 1, 3, ("a",)),
    Task("c", 0, 3, 6, ("b",)),
]
#: r (1 s) -> four tasks of 2 s, measured on 2 workers.
FAN_OUT = [
    Task("r", 0, 0, 1),
    *(Task(f"x{i}", 0, 1 + 2 * (i // 2), 3 + 2 * (i // 2), ("r",)) for i in range(4)),
]
#: Two tasks measured on one worker; the client reacts to the second 1 s after it stopped and
#: submits b, which has no dependency the scheduler sees; it exits 0.5 s after b.
CLIENT = [
    Task("a1", 0, 0, 1),
    Task("a2", 0, 1, 2),
    Task("b", 3, 3, 4),
]


def test_chain_on_one_slot_is_the_sum_of_durations():
    assert replay(CHAIN, 1, 0, 6) == pytest.approx(6)
    assert replay(CHAIN, 8, 0, 6) == pytest.approx(6)


def test_fan_out_splits_over_workers():
    assert replay(FAN_OUT, 2, 0, 5) == pytest.approx(5)  # as measured
    assert replay(FAN_OUT, 1, 0, 5) == pytest.approx(9)
    assert replay(FAN_OUT, 4, 0, 5) == pytest.approx(3)
    assert replay(FAN_OUT, 128, 0, 5) == pytest.approx(3)


def test_implied_client_dependency_keeps_the_gap_after_the_trigger():
    assert replay(CLIENT, 1, 0, 4.5) == pytest.approx(4.5)  # as measured
    # a1 and a2 together: b is ready 1 s after a2, at 2; it runs to 3, the exit is at 3.5.
    assert replay(CLIENT, 2, 0, 4.5) == pytest.approx(3.5)


def test_start_up_and_exit_count_as_client_time():
    late = [Task("a", 2, 2, 3)]  # submitted 2 s after the process started
    assert replay(late, 4, 0, 3.25) == pytest.approx(3.25)
    assert replay([], 4, 0, 3.25) == pytest.approx(3.25)


@pytest.mark.parametrize(
    ("tasks", "ended"), [(CHAIN, 6), (FAN_OUT, 5), (CLIENT, 4.5)], ids=["chain", "fan", "client"]
)
def test_more_workers_are_never_slower(tasks, ended):
    walls = [replay(tasks, slots, 0, ended) for slots in range(1, 9)]
    assert all(b <= a + 1e-9 for a, b in zip(walls, walls[1:], strict=False))


def test_idle_seconds_are_the_time_without_a_task():
    assert idle_seconds(CHAIN, 0, 6) == pytest.approx(0)
    assert idle_seconds(FAN_OUT, -1, 5) == pytest.approx(1)
    assert idle_seconds(CLIENT, 0, 4.5) == pytest.approx(1.5)  # 2-3 and 4-4.5
    assert idle_seconds([Task("a", 0, 0, 2), Task("b", 0, 1, 3)], 0, 3) == pytest.approx(0)


def test_a_cycle_is_an_inconsistent_record():
    cycle = [Task("a", 0, 1, 1, ("b",)), Task("b", 0, 1, 1, ("a",))]
    with pytest.raises(ValueError, match="cycle"):
        replay(cycle, 1, 0, 1)


def record_of(*tasks: tuple, threads: int = 1) -> dict:
    """A record of (key, worker, submitted, start, stop, dependencies) rows."""
    fields = ("key", "worker", "submitted", "start", "stop", "dependencies")
    rows = [dict(zip(fields, task, strict=True)) for task in tasks]
    return {"threads": {row["worker"]: threads for row in rows}, "tasks": rows}


def test_record_without_a_submission_counts_from_the_start():
    record = record_of(("a", "w", None, 5, 6, []), ("b", "w", 5.5, 6, 7, ["a"]))
    assert tasks_of(record) == [Task("a", 5, 5, 6), Task("b", 5.5, 6, 7, ("a",))]


def test_dispatch_delay_is_the_wait_of_a_ready_task_with_a_free_thread():
    record = record_of(
        ("a", "w1", 0, 0, 1, []),
        ("b", "w1", 0, 1, 2, []),  # waited for w1's thread: no delay
        ("c", "w1", 0, 2.5, 3.5, ["b"]),  # ready and w1 free at 2
        ("d", "w2", 0, 0.3, 0.8, []),
    )
    assert [task.delay for task in tasks_of(record)] == pytest.approx([0, 0, 0.5, 0.3])
    two_threads = record_of(("a", "w", 0, 0, 2, []), ("b", "w", 0, 1, 2, []), threads=2)
    assert [task.delay for task in tasks_of(two_threads)] == pytest.approx([0, 1])
    late = tasks_of(record_of(("a", "w", 0, 0.5, 1.5, [])))
    assert replay(late, 1, 0, 1.5) == pytest.approx(1.5)
    assert replay(late, 8, 0, 1.5) == pytest.approx(1.5)


class FakeProcess:
    """A process with fixed CPU times and RSS, or one that exited (``cpu`` None)."""

    def __init__(self, pid: int, cpu: tuple[float, float] | None, rss: int = 0) -> None:
        self.pid, self.cpu, self.rss = pid, cpu, rss

    def cpu_times(self) -> SimpleNamespace:
        if self.cpu is None:
            raise psutil.NoSuchProcess(self.pid)
        return SimpleNamespace(user=self.cpu[0], system=self.cpu[1])

    def memory_info(self) -> SimpleNamespace:
        return SimpleNamespace(rss=self.rss)


def test_tree_usage_keeps_the_cpu_of_processes_that_exited():
    usage = TreeUsage(root=1)
    usage.sample([FakeProcess(1, (1, 0.5), 10), FakeProcess(2, (2, 0), 20), FakeProcess(3, (1, 1))])
    assert (usage.client_seconds, usage.worker_seconds) == (1.5, 4)
    # 2 exits while sampled, 3 before it is listed, 4 starts.
    usage.sample([FakeProcess(1, (3, 0), 5), FakeProcess(2, None), FakeProcess(4, (0.5, 0), 1)])
    assert (usage.client_seconds, usage.worker_seconds) == (3, 4.5)
    assert usage.peak_rss == 30


def test_measure_counts_a_child_as_a_worker():
    burn = "sum(range(3 * 10**7))"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"
    measured = measure([sys.executable, "-c", child], interval=0.05)
    assert measured.usage.worker_seconds > 0.2
    assert measured.usage.client_seconds < measured.usage.worker_seconds
    assert measured.ended - measured.started == pytest.approx(measured.wall, abs=0.1)
    with pytest.raises(RuntimeError, match="failed"):
        measure([sys.executable, "-c", "raise SystemExit(3)"])
