"""Run a command and record its wall time, the peak resident memory of its process tree and
the CPU seconds of its root process and of its descendants."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class TreeUsage:
    """CPU seconds (user + system) and peak summed RSS of a process tree, from samples.

    Each sample keeps the last CPU time seen of every process, so the CPU of a process that
    exits between two samples is kept up to its last sample (at most one interval is lost).
    The root process is the client (with a ``LocalCluster``, the scheduler and the nannies
    run in it too); every descendant (worker processes, multiprocessing helpers) counts as a
    worker.
    """

    root: int
    cpu: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0

    def sample(self, processes: Iterable[psutil.Process]) -> None:
        rss = 0
        for process in processes:
            try:
                times, memory = process.cpu_times(), process.memory_info().rss
            except psutil.Error:
                continue  # gone since listed: its last sample stands
            self.cpu[process.pid] = times.user + times.system
            rss += memory
        self.peak_rss = max(self.peak_rss, rss)

    @property
    def client_seconds(self) -> float:
        return self.cpu.get(self.root, 0.0)

    @property
    def worker_seconds(self) -> float:
        return sum(seconds for pid, seconds in self.cpu.items() if pid != self.root)


@dataclass(frozen=True)
class Measurement:
    """One measured command: wall seconds, its start and end (epoch seconds, the clock of
    dask's task times) and the usage of its process tree."""

    wall: float
    started: float
    ended: float
    usage: TreeUsage

    @property
    def peak_gib(self) -> float:
        return self.usage.peak_rss / 2**30


def measure(
    command: list[str],
    interval: float = 0.05,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Measurement:
    """Run ``command`` (in ``cwd``), sampling its process tree every ``interval`` seconds;
    ``env`` adds environment variables. A failing command raises with its stderr."""
    environment = None if env is None else {**os.environ, **env}
    started, start = time.time(), time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment, cwd=cwd)
    root = psutil.Process(process.pid)
    usage = TreeUsage(process.pid)
    while process.poll() is None:
        with suppress(psutil.Error):  # the root exited while its children were listed
            usage.sample([root, *root.children(recursive=True)])
        time.sleep(interval)
    wall, ended = time.perf_counter() - start, time.time()
    stderr = process.stderr.read()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr}")
    return Measurement(wall, started, ended, usage)


def run_measured(
    command: list[str], interval: float = 0.05, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Wall seconds and peak summed RSS (GiB) of ``command`` and all its children."""
    measured = measure(command, interval, env)
    return measured.wall, measured.peak_gib


def replace_readme_section(page: Path, name: str, text: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``page``:
    a Markdown page of the manual (``docs/benchmarks/*.md``) or the README."""
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
    content = page.read_text()
    if not pattern.search(content):
        raise SystemExit(f"{page.name} has no '{name}' markers")
    page.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), content))
