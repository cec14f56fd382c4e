"""Run a command and record its wall time and the peak resident memory of its process tree."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import psutil


def run_measured(
    command: list[str], interval: float = 0.05, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Wall seconds and peak summed RSS (GiB) of ``command`` and all its children; ``env``
    adds environment variables."""
    start = time.perf_counter()
    environment = None if env is None else {**os.environ, **env}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)
    root = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(interval)
    elapsed = time.perf_counter() - start
    stderr = process.stderr.read()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr}")
    return elapsed, peak / 2**30


def replace_readme_section(page: Path, name: str, text: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``page``:
    a Markdown page of the manual (``docs/benchmarks/*.md``) or the README."""
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
    content = page.read_text()
    if not pattern.search(content):
        raise SystemExit(f"{page.name} has no '{name}' markers")
    page.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), content))
