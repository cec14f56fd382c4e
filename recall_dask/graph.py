"""Neighbour graphs and modularity clustering on the gathered PCA embedding.

Mirrors Seurat's ``FindNeighbors`` (exact kNN, ``ComputeSNN``) and ``FindClusters``
(``RunModularityClustering`` + ``GroupSingletons``) with their defaults. The embedding is
small (n_cells x n_pcs), so everything here runs in memory on one machine; nothing is
n x n dense.

Known differences from Seurat:

* Neighbours come from Annoy as Seurat's default ``nn.method = "annoy"`` (same library, trees,
  seed and insertion order, so the same neighbours for the same embedding), or from an exact
  search (``neighbors="exact"``).
* Louvain is Seurat's ModularityOptimizer algorithm, ported step for step (numba kernels in
  ``_kernels``) with the same ``java.util.Random`` stream; Leiden comes from leidenalg, as
  Seurat's algorithm 4 does.
* ``GroupSingletons`` breaks connectivity ties by ``sample()``; we take the lowest label.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dask
import igraph as ig
import leidenalg as la
import numba
import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from recall_dask._kernels import (
    java_random,
    louvain_local_moving,
    partition_quality,
    reduce_network,
    shared_neighbour_counts,
)
from recall_dask.errors import InputError

ALGORITHMS = ("louvain", "leiden")
#: Seurat's FindNeighbors ``n.trees``: Annoy trees per index.
ANNOY_TREES = 50
#: Cells per Annoy query task; queries run on threads, each cell's answer on its own.
_ANNOY_QUERY_BATCH = 4096


class ClusteringStopped(Exception):
    """A clustering abandoned between random starts because its result is no longer needed."""


@dataclass(frozen=True)
class SNNGraph:
    """The SNN graph as clustering reads it, built once and shared by every clustering.

    ``network`` holds the off-diagonal CSR arrays (indptr, indices, weights) and each node's
    total edge weight: all that Louvain, Leiden and ``GroupSingletons`` use (Seurat drops the
    diagonal too), so the CSR matrix itself need not be kept.
    """

    network: tuple[np.ndarray, ...]

    @classmethod
    def from_snn(cls, snn: sp.csr_matrix | SNNGraph) -> SNNGraph:
        if isinstance(snn, SNNGraph):
            return snn
        snn = sp.csr_matrix(snn)
        if not snn.has_canonical_format:
            snn = snn.copy()
            snn.sum_duplicates()
        return cls(_network(snn))

    @property
    def n_cells(self) -> int:
        return self.network[3].size


def _checked_embedding(embedding: np.ndarray, k: int) -> np.ndarray:
    x = np.ascontiguousarray(embedding, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"embedding must be 2-D (cells x components), got shape {x.shape}")
    if k < 1 or x.shape[0] < k:
        raise InputError(f"fewer cells ({x.shape[0]}) than neighbours ({k})")
    return x


def annoy_neighbors(embedding: np.ndarray, k: int = 20, n_trees: int = ANNOY_TREES) -> np.ndarray:
    """Approximate Euclidean kNN as Seurat's ``FindNeighbors`` default (``nn.method =
    "annoy"``), an (n_cells, k) int64 array of neighbour lists ordered by distance.

    Seurat builds an RcppAnnoy index of the cells in order, with ``n.trees = 50`` and Annoy's
    own default seed, and asks it for each cell's k nearest cells with the default search
    (``search.k = -1``, i.e. ``n_trees * k`` nodes). The Python ``annoy`` package shares its
    C++ core, so the same embedding gives the same lists: the cell itself usually comes first
    but, as in Seurat, is not forced in. The index is built on one thread (Annoy seeds each
    build thread differently), so the lists do not depend on the machine's cores; the queries
    run on threads.
    """
    from annoy import AnnoyIndex

    x = _checked_embedding(embedding, k)
    n = x.shape[0]
    index = AnnoyIndex(x.shape[1], "euclidean")
    for cell, vector in enumerate(x):
        index.add_item(cell, vector)
    index.build(n_trees, n_jobs=1)
    lists = np.empty((n, k), dtype=np.int64)

    def query(start: int) -> None:
        # A search gathers n_trees * k candidates or every cell, so it always finds k.
        for cell in range(start, min(start + _ANNOY_QUERY_BATCH, n)):
            lists[cell] = index.get_nns_by_item(cell, k)

    with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="annoy") as pool:
        list(pool.map(query, range(0, n, _ANNOY_QUERY_BATCH)))
    return lists


def exact_neighbors(embedding: np.ndarray, k: int = 20) -> np.ndarray:
    """Exact Euclidean kNN, each list starting with the cell itself (Seurat ``k.param``).

    Returns an (n_cells, k) int64 array. Within a row, neighbours are ordered by
    (distance, index); the cell itself is always column 0, even among exact duplicates.
    Which of several equidistant cells fills the last slot is up to the KD-tree, which
    is deterministic for a given input.
    """
    x = _checked_embedding(embedding, k)
    n = x.shape[0]
    tree = cKDTree(x)
    # Query in the tree's own leaf order: consecutive queries then walk the same branches,
    # which halves the time on a million cells. The neighbours do not change.
    leaf_order = tree.indices
    dist, idx = np.empty((n, k)), np.empty((n, k), dtype=np.int64)
    found_dist, found_idx = tree.query(x[leaf_order], k=k, workers=-1)
    dist[leaf_order], idx[leaf_order] = found_dist.reshape(n, k), found_idx.reshape(n, k)
    rows = np.arange(n)
    is_self = idx == rows[:, None]
    dist[is_self] = -1.0  # self sorts first
    missing = ~is_self.any(axis=1)  # >= k exact duplicates pushed self out: replace the last
    idx[missing, -1], dist[missing, -1] = rows[missing], -1.0
    order = np.lexsort((idx, dist), axis=-1)
    return np.take_along_axis(idx, order, axis=1)


#: How neighbours are found, by ``--neighbors``.
NEIGHBOR_SEARCHES = {"annoy": annoy_neighbors, "exact": exact_neighbors}


def nearest_neighbors(embedding: np.ndarray, k: int, method: str) -> np.ndarray:
    """Each cell's k neighbour lists by ``method`` (a key of :data:`NEIGHBOR_SEARCHES`)."""
    return NEIGHBOR_SEARCHES[method](embedding, k)


def shared_nearest_neighbors(knn: np.ndarray, prune: float = 1 / 15) -> sp.csr_matrix:
    """Jaccard SNN graph from kNN lists, as Seurat's ``ComputeSNN``.

    ``s_ij`` is the number of cells shared by the kNN lists of i and j (lists include the
    cell itself), the weight is ``s / (2k - s)``, and weights below ``prune`` are dropped.
    The result is symmetric with sorted indices; its diagonal is 1 (s_ii = k), as in Seurat.
    """
    knn = np.asarray(knn)
    if knn.ndim != 2:
        raise InputError(f"knn must be 2-D (cells x k), got shape {knn.shape}")
    n, k = knn.shape
    knn = knn.astype(np.int64, copy=False)
    if knn.size and (knn.min() < 0 or knn.max() >= n):
        raise InputError(f"knn indices must lie in [0, {n})")
    # Reverse lists: members[starts[m]:starts[m+1]] are the cells that have m as a neighbour.
    flat = knn.ravel()
    members = (np.argsort(flat, kind="stable") // k).astype(np.int64)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=n), out=starts[1:])
    min_shared = _min_shared(k, prune)
    n_chunks = max(1, min(n, 4 * numba.get_num_threads()))
    bounds = np.linspace(0, n, n_chunks + 1).astype(np.int64)
    row_nnz = np.zeros(n, dtype=np.int64)
    no_data = np.empty(0, dtype=np.float64)
    shared_neighbour_counts(
        knn, starts, members, min_shared, bounds, row_nnz, row_nnz[:0], no_data, True
    )
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_nnz, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int64)
    data = np.empty(indptr[-1], dtype=np.float64)
    shared_neighbour_counts(knn, starts, members, min_shared, bounds, indptr, indices, data, False)
    if indptr[-1] < 2**31:
        indptr, indices = indptr.astype(np.int32), indices.astype(np.int32)
    out = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    out.has_sorted_indices = True
    return out


def _min_shared(k: int, prune: float) -> int:
    """Smallest shared count s whose weight s / (2k - s) survives ``prune``, computed the
    same floating-point way as Seurat so the threshold edge matches exactly."""
    s = np.arange(k + 1, dtype=np.float64)
    keep = np.nonzero(s / (k + (k - s)) >= prune)[0]
    return int(keep[0]) if keep.size else k + 1


def cluster_graph(
    snn: sp.csr_matrix | SNNGraph,
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
    :class:`SNNGraph` to share one prepared graph between clusterings. Setting ``stop``
    abandons the clustering at its next random start with :class:`ClusteringStopped`.
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
    optimise = _seurat_louvain if algorithm == "louvain" else _leiden
    stop = stop or threading.Event()
    best = optimise(graph.network, resolution, seed, n_starts, n_iterations, initial, stop)
    labels = _group_singletons(order_by_size(best), graph.network)
    return order_by_size(labels)


def _seurat_louvain(network, resolution, seed, n_starts, n_iterations, initial, stop):
    """Seurat's ``RunModularityClustering`` with algorithm 1 (Louvain), step for step.

    One ``java.util.Random(seed)`` stream drives every start, as in Seurat; each start runs
    the Louvain algorithm up to ``n_iterations`` times while it still improves, and the start
    with the best quality wins (the first on ties). Quality uses Seurat's resolution scaling,
    resolution / (2 x total edge weight).
    """
    scaled_resolution = resolution / network[2].sum()
    ids = network[1].dtype  # cluster ids as the node ids: int32 below 2^31 edges
    initial = None if initial is None else np.asarray(initial, dtype=ids)
    state = java_random(seed)
    best, best_quality = None, -np.inf
    for _ in range(n_starts):
        if stop.is_set():
            raise ClusteringStopped
        cluster = np.arange(network[3].size, dtype=ids) if initial is None else initial.copy()
        for _ in range(n_iterations):
            if not _louvain(network, cluster, scaled_resolution, state):
                break
        quality = partition_quality(*network, cluster, scaled_resolution)
        if quality > best_quality:
            best, best_quality = cluster.copy(), quality
    return best


def _louvain(network, cluster, resolution, state) -> bool:
    """One Louvain run from ``cluster`` (Seurat's ``runLouvainAlgorithm``): local moving, then
    the same on the network of clusters, recursively; ``cluster`` is updated in place."""
    update, n_clusters = louvain_local_moving(*network, cluster, resolution, state)
    if n_clusters < network[3].size:
        coarse = np.arange(n_clusters, dtype=cluster.dtype)
        if _louvain(reduce_network(*network, cluster, n_clusters), coarse, resolution, state):
            cluster[:] = coarse[cluster]
            update = True
    return update


def _network(snn: sp.csr_matrix) -> tuple[np.ndarray, ...]:
    """CSR parts of the SNN without its diagonal, and each node's total edge weight.

    Built by masking the stored entries, without the copies a sparse subtraction makes. The
    indices keep the SNN's dtype (int32 for fewer than 2^31 edges), which cuts the memory
    traffic of Louvain's sweeps.
    """
    n = snn.shape[0]
    rows = np.repeat(np.arange(n, dtype=snn.indices.dtype), np.diff(snn.indptr))
    keep = (snn.indices != rows) & (snn.data != 0)
    rows = rows[keep]
    weights = snn.data[keep].astype(np.float64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    node_weight = np.bincount(rows, weights=weights, minlength=n).astype(np.float64)
    return indptr, snn.indices[keep], weights, node_weight


def _leiden(network, resolution, seed, n_starts, n_iterations, initial, stop):
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
