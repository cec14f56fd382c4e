"""Memory of one clustering task against the size of its graph (issue 26): the measurement
behind ``recall_dask.tasks.CLUSTERING_MEMORY_PER_GRAPH_BYTE``, the budget that a run checks
each draw's graph against the workers' memory limit with.

For each ``--cells`` N: a synthetic embedding (8 Gaussian groups in 10 PCs), its SNN graph
as the run's graph stage makes it (``neighbor_graph``, exact neighbors for speed: the graph
has the same form and about the same edges as Annoy's), written to an ``.npz`` as a stored
graph is. Then, in a fresh process, a clustering task's work: the stored graph read and
clustered once at resolution 0.8 (Louvain, ``--starts`` random starts). Its peak resident
memory above the process's memory before reading is the task's, and is reported in units of
the graph's bytes.

    python benchmarks/clustering_memory.py --cells 200000 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from _measure import replace_readme_section

from recall_dask.graph import cluster_graph
from recall_dask.graph.build import neighbor_graph, read_graph
from recall_dask.io.storage import Location
from recall_dask.params import RecallParams

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks" / "performance.md"


def stored_graph_of(cells: int, data_dir: Path) -> Path:
    """The SNN graph of ``cells`` synthetic cells, written once to ``data_dir``."""
    path = data_dir / f"snn_{cells}.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        centers = rng.normal(0, 3, size=(8, 10))
        embedding = centers[rng.integers(8, size=cells)] + rng.normal(size=(cells, 10))
        neighbor_graph(embedding, RecallParams(neighbors="exact"), Location.of(path))
    return path


def clustering_task(path: Path, starts: int) -> dict[str, float]:
    """A clustering task's work on the stored graph at ``path``: its peak memory above the
    memory before reading, its graph's bytes and its seconds (run in a fresh process, whose
    memory is sampled every 5 ms)."""
    cluster_graph(read_graph(Location.of(stored_graph_of(100, path.parent))), 0.8)  # compile
    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    before = process.memory_info().rss
    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    graph = read_graph(Location.of(path))
    labels = cluster_graph(graph, 0.8, n_starts=starts)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return {
        "graph_bytes": graph.nbytes,
        "task_bytes": peak[0] - before,
        "seconds": seconds,
        "clusters": int(labels.max()) + 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--starts", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--task", type=Path, help=argparse.SUPPRESS)  # the fresh process
    args = parser.parse_args()
    if args.task is not None:
        print(json.dumps(clustering_task(args.task, args.starts)))
        return
    args.data_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "| cells | graph GiB | clustering task GiB above its start | task / graph | s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for cells in args.cells:
        path = stored_graph_of(cells, args.data_dir)
        command = [sys.executable, __file__, "--task", str(path), "--starts", str(args.starts)]
        result = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
        graph, task = result["graph_bytes"] / 2**30, result["task_bytes"] / 2**30
        lines.append(
            f"| {cells:,} | {graph:.2f} | {task:.2f} | {task / graph:.2f} "
            f"| {result['seconds']:.0f} |"
        )
        print(lines[-1], flush=True)
    replace_readme_section(PAGE, "clustering-memory", "\n".join([*lines, ""]))


if __name__ == "__main__":
    main()
