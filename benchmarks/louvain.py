"""Louvain micro-benchmark: Seurat's local moving and a whole ``cluster_graph`` at growing sizes.

The graphs are SNN graphs (k = 20) of 8 Gaussian blobs in 10 dimensions, cells interleaved
by group as ``recall-dask simulate`` writes them; each is built once and cached in
``--data-dir``. For each size we time, in CPU seconds of this process, the first local moving
of a random start (every node its own cluster: the costliest call) and ``cluster_graph`` at
resolution 0.8 with Seurat's defaults (10 starts of up to 10 iterations). Edges are counted
in both directions, as the CSR network stores them.

``--baseline DIR`` also times the Louvain kernels of another checkout (e.g. the main branch),
run by this checkout's ``seurat_louvain`` (``recall_dask/graph/louvain.py``), alternating with
the current kernels in the same process, and checks that both give the same labels.

    python benchmarks/louvain.py --cells 100000 300000 1000000 --baseline /work/main
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import scipy.sparse as sp

from recall_dask import graph
from recall_dask.graph import louvain

KERNELS = ("java_random", "louvain_local_moving", "reduce_network", "partition_quality")


def blob_snn(data_dir: Path, n_cells: int) -> sp.csr_matrix:
    """The cached SNN graph of ``n_cells`` cells in 8 blobs (built on first use)."""
    path = data_dir / f"louvain_snn_{n_cells}.npz"
    if not path.exists():
        rng = np.random.default_rng(n_cells)
        centres = rng.normal(scale=12.0, size=(8, 10))
        x = centres[np.arange(n_cells) % 8] + rng.normal(size=(n_cells, 10))
        snn = graph.shared_nearest_neighbors(graph.exact_neighbors(x, k=20))
        sp.save_npz(path, snn, compressed=False)
    return sp.load_npz(path).tocsr()


def load_kernels(checkout: Path, scratch: Path) -> ModuleType:
    """The Louvain kernels of another checkout (``recall_dask/graph/louvain.py``, or
    ``recall_dask/_kernels.py`` in checkouts before the graph package), as a module of its own.
    It is loaded from a copy in ``scratch``, so numba caches its compilations there, not in the
    checkout."""
    copy = scratch / "baseline_kernels.py"
    source = checkout / "recall_dask" / "graph" / "louvain.py"
    if not source.exists():
        source = checkout / "recall_dask" / "_kernels.py"
    shutil.copyfile(source, copy)
    spec = importlib.util.spec_from_file_location("baseline_kernels", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use_kernels(kernels: ModuleType | SimpleNamespace) -> None:
    """Make ``seurat_louvain`` call the Louvain kernels of ``kernels``."""
    for name in KERNELS:
        setattr(louvain, name, getattr(kernels, name))


def time_one(kernels: ModuleType | SimpleNamespace, snn_graph: graph.SNNGraph) -> dict[str, object]:
    """CPU seconds of the first local moving and of ``cluster_graph``, and the labels."""
    use_kernels(kernels)
    network = snn_graph.network
    cluster = np.arange(network[3].size, dtype=network[1].dtype)
    state = kernels.java_random(0)
    start = time.process_time()
    kernels.louvain_local_moving(*network, cluster, 0.8 / network[2].sum(), state)
    local_moving = time.process_time() - start
    start = time.process_time()
    labels = graph.cluster_graph(snn_graph, 0.8)
    return {
        "local moving": local_moving,
        "cluster_graph": time.process_time() - start,
        "labels": labels,
    }


def compare(
    versions: dict[str, ModuleType | SimpleNamespace],
    data_dir: Path,
    sizes: list[int],
    repeats: int,
):
    """Print one table row per size, kernels and repeat; stop if the labels differ."""
    warm_up = graph.shared_nearest_neighbors(
        graph.exact_neighbors(np.random.default_rng(0).normal(size=(500, 10)))
    )
    for kernels in versions.values():  # compile outside the timings
        time_one(kernels, graph.SNNGraph.from_snn(warm_up))
    print("| cells | edges | kernels | first local moving: s, ns/edge | cluster_graph s | K |")
    print("|---:|---:|---|---:|---:|---:|")
    for n_cells in sizes:
        snn_graph = graph.SNNGraph.from_snn(blob_snn(data_dir, n_cells))
        n_edges = int(snn_graph.network[0][-1])
        labels = {}
        for repeat in range(repeats):
            names = list(versions) if repeat % 2 == 0 else list(versions)[::-1]
            for name in names:
                result = time_one(versions[name], snn_graph)
                labels[name] = result["labels"]
                seconds = result["local moving"]
                print(
                    f"| {n_cells:,} | {n_edges:,} | {name} | {seconds:.2f}, "
                    f"{1e9 * seconds / n_edges:.0f} | {result['cluster_graph']:.1f} | "
                    f"{labels[name].max() + 1} |",
                    flush=True,
                )
        if len(labels) == 2 and not np.array_equal(labels["current"], labels["baseline"]):
            raise SystemExit(f"different labels at {n_cells} cells")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/recall_louvain_bench"))
    parser.add_argument("--baseline", type=Path, help="checkout whose kernels to compare")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        # The current kernels, held apart from the module whose names use_kernels replaces.
        current = SimpleNamespace(**{name: getattr(louvain, name) for name in KERNELS})
        versions = {"current": current}
        if args.baseline:
            versions["baseline"] = load_kernels(args.baseline, Path(scratch))
        compare(versions, args.data_dir, args.cells, args.repeats)


if __name__ == "__main__":
    main()
