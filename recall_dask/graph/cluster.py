"""Modularity clustering of the SNN graph, as Seurat's ``FindClusters`` with its defaults.

``RunModularityClustering`` by Louvain (:mod:`recall_dask.graph.louvain`, Seurat's algorithm
1) or Leiden (:mod:`recall_dask.graph.leiden`, algorithm 4), then ``GroupSingletons``. Where
Seurat breaks ``GroupSingletons``' connectivity ties by ``sample()``, we take the lowest
label.
"""

from __future__ import annotations

import threading

import numpy as np
import scipy.sparse as sp

from recall_dask.choices import ALGORITHMS
from recall_dask.errors import InputError
from recall_dask.graph.leiden import leiden
from recall_dask.graph.louvain import seurat_louvain
from recall_dask.graph.network import SNNGraph, StoredSNNGraph


def cluster_graph(
    snn: sp.csr_matrix | SNNGraph | StoredSNNGraph,
    resolution: float,
    *,
    algorithm: str = "louvain",
    seed: int = 0,
    n_starts: int = 10,
    n_iterations: int = 10,
    initial: np.ndarray | None = None,
    stop: threading.Event | None = None,
) -> np.ndarray:
    """Modularity clustering of the SNN graph, as Seurat's ``FindClusters`` defaults.

    Optimizes standard modularity with resolution ``resolution`` (Seurat modularity
    function 1) on the off-diagonal SNN. ``algorithm`` is ``"louvain"`` (Seurat algorithm 1)
    or ``"leiden"`` (algorithm 4). Each of ``n_starts`` random starts iterates until no
    improvement or ``n_iterations`` passes; the best-quality start wins (first on ties).
    ``seed`` is Seurat's ``random.seed``. ``initial`` warm-starts every start from that
    partition instead of singletons. Singletons are then merged (``GroupSingletons``) and
    labels renumbered 0..K-1 by decreasing size, ties by smallest cell index. Pass an
    :class:`SNNGraph` (or :class:`StoredSNNGraph`) to share one prepared graph between
    clusterings. Setting ``stop`` abandons the clustering at its next random start with
    :class:`ClusteringStopped`.
    """
    if algorithm not in ALGORITHMS:
        raise InputError(f"unknown clustering algorithm {algorithm!r}; use one of {ALGORITHMS}")
    if n_starts < 1 or n_iterations < 1:
        raise InputError("n_starts and n_iterations must be at least 1")
    graph = SNNGraph.from_snn(snn)
    if initial is not None:
        initial = np.asarray(initial)
        if initial.shape != (graph.n_cells,):
            raise InputError(f"initial partition has shape {initial.shape}, not ({graph.n_cells},)")
        initial = order_by_size(initial).tolist()
    optimise = seurat_louvain if algorithm == "louvain" else leiden
    stop = stop or threading.Event()
    network = graph.network  # read once: a stored graph reads it from its store
    best = optimise(network, resolution, seed, n_starts, n_iterations, initial, stop)
    labels = _group_singletons(order_by_size(best), network)
    return order_by_size(labels)


def order_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber 0..K-1 by decreasing size, ties by the smallest cell index in the cluster."""
    uniq, first, inverse, sizes = np.unique(
        labels, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -sizes))
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    return rank[inverse.ravel()]


def _group_singletons(labels: np.ndarray, network: tuple[np.ndarray, ...]) -> np.ndarray:
    """Merge one-cell clusters as Seurat's ``GroupSingletons`` (group.singletons = TRUE).

    Each singleton, in label order, joins the non-singleton cluster with the highest mean
    SNN weight to it (sum of weights / cluster size, sizes updated as singletons join, as in
    Seurat). Ties and isolated cells go to the lowest label, where Seurat samples randomly.
    """
    labels = labels.copy()
    sizes = np.bincount(labels)
    singleton_ids = np.nonzero(sizes == 1)[0]
    if singleton_ids.size == 0 or singleton_ids.size == sizes.size:
        return labels
    cell_of = np.full(sizes.size, -1, dtype=np.int64)
    cell_of[labels] = np.arange(labels.size)
    targets = sizes != 1
    indptr, indices, weights = network[:3]
    for cluster in singleton_ids:
        cell = cell_of[cluster]
        lo, hi = indptr[cell], indptr[cell + 1]  # the network has no self edges
        sums = np.bincount(labels[indices[lo:hi]], weights=weights[lo:hi], minlength=sizes.size)
        mean = np.where(targets, sums / np.maximum(sizes, 1), -np.inf)
        chosen = int(np.argmax(mean))
        labels[cell] = chosen
        sizes[chosen] += 1
        sizes[cluster] = 0
    return labels
