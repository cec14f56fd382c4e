"""Leiden clustering from leidenalg, as Seurat's algorithm 4, best of several random starts."""

from __future__ import annotations

import threading

import dask
import igraph as ig
import leidenalg as la
import numpy as np

from recall_dask.graph.network import ClusteringStopped


def leiden(
    network: tuple[np.ndarray, ...],
    resolution: float,
    seed: int,
    n_starts: int,
    n_iterations: int,
    initial: list[int] | None,
    stop: threading.Event,
) -> np.ndarray:
    """leidenalg's Leiden (Seurat's algorithm 4), best of ``n_starts`` seeds seed, seed + 1, ...

    Each start is a task, so starts spread over the workers' processes and the graph is
    shipped once; the best quality wins, the earliest start on ties, whatever ran where.
    """
    if stop.is_set():
        raise ClusteringStopped
    shared = dask.delayed(network, traverse=False)
    start = dask.delayed(_leiden_start, pure=True)
    results = dask.compute(
        *[
            start(shared, resolution, (seed + r) % 2**31, n_iterations, initial)
            for r in range(n_starts)
        ]
    )
    qualities = [quality for quality, _ in results]
    return results[int(np.argmax(qualities))][1]


def _leiden_start(network, resolution, rng_seed, n_iterations, initial):
    """Quality and membership of one Leiden start."""
    part = la.RBConfigurationVertexPartition(
        _to_igraph(network),
        initial_membership=initial,
        weights="weight",
        resolution_parameter=resolution,
    )
    optimiser = la.Optimiser()
    optimiser.set_rng_seed(rng_seed)
    for _ in range(n_iterations):
        if optimiser.optimise_partition(part, n_iterations=1) <= 0:
            break
    return part.quality(), np.asarray(part.membership, dtype=np.int64)


def _to_igraph(network: tuple[np.ndarray, ...]) -> ig.Graph:
    """Undirected weighted graph from the network's edges above the diagonal."""
    indptr, indices, weights, node_weight = network
    rows = np.repeat(np.arange(node_weight.size), np.diff(indptr))
    keep = indices > rows
    graph = ig.Graph(n=node_weight.size, directed=False)
    graph.add_edges(np.column_stack((rows[keep], indices[keep])))  # numpy in, no edge objects
    graph.es["weight"] = weights[keep]
    return graph
