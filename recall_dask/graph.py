"""Neighbour graphs and modularity clustering on the gathered PCA embedding.

Mirrors Seurat's ``FindNeighbors`` (exact kNN, ``ComputeSNN``) and ``FindClusters``
(``RunModularityClustering`` + ``GroupSingletons``) with their defaults. The embedding is
small (n_cells x n_pcs), so everything here runs in memory on one machine; nothing is
n x n dense.

Known differences from Seurat:

* Seurat's default ``nn.method = "annoy"`` is approximate; we use an exact kNN.
* Louvain/Leiden come from leidenalg, not Seurat's Java-derived ModularityOptimizer, so
  random streams differ and partitions match in quality, not bit for bit.
* ``GroupSingletons`` breaks connectivity ties by ``sample()``; we take the lowest label.
"""

from __future__ import annotations

import dask
import igraph as ig
import leidenalg as la
import numba
import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from recall_dask._kernels import shared_neighbour_counts
from recall_dask.errors import InputError

ALGORITHMS = ("louvain", "leiden")


def nearest_neighbors(embedding: np.ndarray, k: int = 20) -> np.ndarray:
    """Exact Euclidean kNN, each list starting with the cell itself (Seurat ``k.param``).

    Returns an (n_cells, k) int64 array. Within a row, neighbours are ordered by
    (distance, index); the cell itself is always column 0, even among exact duplicates.
    Which of several equidistant cells fills the last slot is up to the KD-tree, which
    is deterministic for a given input.
    """
    x = np.ascontiguousarray(embedding, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"embedding must be 2-D (cells x components), got shape {x.shape}")
    n = x.shape[0]
    if k < 1 or n < k:
        raise InputError(f"fewer cells ({n}) than neighbours ({k})")
    dist, idx = cKDTree(x).query(x, k=k, workers=-1)
    dist, idx = dist.reshape(n, k), idx.reshape(n, k).astype(np.int64)
    rows = np.arange(n)
    is_self = idx == rows[:, None]
    dist[is_self] = -1.0  # self sorts first
    missing = ~is_self.any(axis=1)  # >= k exact duplicates pushed self out: replace the last
    idx[missing, -1], dist[missing, -1] = rows[missing], -1.0
    order = np.lexsort((idx, dist), axis=-1)
    return np.take_along_axis(idx, order, axis=1)


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
    snn: sp.csr_matrix,
    resolution: float,
    *,
    algorithm: str = "louvain",
    seed: int = 0,
    n_starts: int = 10,
    n_iterations: int = 10,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """Modularity clustering of the SNN graph, as Seurat's ``FindClusters`` defaults.

    Optimizes standard modularity with resolution ``resolution`` (Seurat modularity
    function 1) on the off-diagonal SNN. ``algorithm`` is ``"louvain"`` (Seurat algorithm 1)
    or ``"leiden"`` (algorithm 4). Start ``r`` uses RNG seed ``seed + r``; each start
    iterates until no improvement or ``n_iterations`` passes; the best-quality start wins
    (first on ties). ``initial`` warm-starts every start from that partition instead of
    singletons. Singletons are then merged (``GroupSingletons``) and labels renumbered
    0..K-1 by decreasing size, ties by smallest cell index.
    """
    if algorithm not in ALGORITHMS:
        raise InputError(f"unknown clustering algorithm {algorithm!r}; use one of {ALGORITHMS}")
    if n_starts < 1 or n_iterations < 1:
        raise InputError("n_starts and n_iterations must be at least 1")
    snn = sp.csr_matrix(snn)
    if not snn.has_canonical_format:
        snn = snn.copy()
        snn.sum_duplicates()
    if initial is not None:
        initial = np.asarray(initial)
        if initial.shape != (snn.shape[0],):
            raise InputError(f"initial partition has shape {initial.shape}, not ({snn.shape[0]},)")
        initial = _order_by_size(initial).tolist()
    # Each random start is a task, so starts spread over the workers' processes; the graph
    # is shipped once. The best quality wins, the earliest start on ties, whatever ran where.
    shared = dask.delayed(snn, traverse=False)
    start = dask.delayed(_one_start, pure=True)
    results = dask.compute(
        *[
            start(shared, resolution, algorithm, (seed + r) % 2**31, n_iterations, initial)
            for r in range(n_starts)
        ]
    )
    qualities = [quality for quality, _ in results]
    best = results[int(np.argmax(qualities))][1]
    labels = _group_singletons(_order_by_size(best), snn)
    return _order_by_size(labels)


def _one_start(snn, resolution, algorithm, rng_seed, n_iterations, initial):
    """Quality and membership of one random start."""
    part = _optimise(_to_igraph(snn), resolution, algorithm, rng_seed, n_iterations, initial)
    return part.quality(), np.asarray(part.membership, dtype=np.int64)


def _to_igraph(snn: sp.csr_matrix) -> ig.Graph:
    """Undirected weighted graph from the strict upper triangle (Seurat drops the diagonal)."""
    rows = np.repeat(np.arange(snn.shape[0]), np.diff(snn.indptr))
    keep = (snn.indices > rows) & (snn.data != 0)
    edges = np.column_stack((rows[keep], snn.indices[keep]))
    graph = ig.Graph(n=snn.shape[0], directed=False)
    graph.add_edges(edges)  # numpy in, no per-edge Python objects
    graph.es["weight"] = snn.data[keep].astype(np.float64)
    return graph


def _optimise(graph, resolution, algorithm, rng_seed, n_iterations, initial):
    """One random start: repeated Louvain/Leiden passes until no improvement."""
    part = la.RBConfigurationVertexPartition(
        graph, initial_membership=initial, weights="weight", resolution_parameter=resolution
    )
    optimiser = la.Optimiser()
    optimiser.set_rng_seed(rng_seed)
    one_pass = _leiden_pass if algorithm == "leiden" else _louvain_pass
    for _ in range(n_iterations):
        if one_pass(optimiser, part) <= 0:
            break
    return part


def _leiden_pass(optimiser: la.Optimiser, part) -> float:
    """One Leiden iteration (move, refine, aggregate) via leidenalg's own driver."""
    return optimiser.optimise_partition(part, n_iterations=1)


def _louvain_pass(optimiser: la.Optimiser, part) -> float:
    """One Louvain iteration: local moving, then aggregate and move again until stable.

    Built from ``move_nodes``/``aggregate_partition`` rather than ``optimise_partition``
    with ``refine_partition = False``, which crashes in leidenalg 0.12 (native segfault
    in ``Graph::cache_neighbours``, even on Zachary's karate club).
    """
    total = optimiser.move_nodes(part)
    agg = part.aggregate_partition()
    while (diff := optimiser.move_nodes(agg)) > 0:
        total += diff
        part.from_coarse_partition(agg)
        agg = agg.aggregate_partition()
    return total


def _order_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber 0..K-1 by decreasing size, ties by the smallest cell index in the cluster."""
    uniq, first, inverse, sizes = np.unique(
        labels, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -sizes))
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    return rank[inverse.ravel()]


def _group_singletons(labels: np.ndarray, snn: sp.csr_matrix) -> np.ndarray:
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
    for cluster in singleton_ids:
        cell = cell_of[cluster]
        lo, hi = snn.indptr[cell], snn.indptr[cell + 1]
        nbrs, weights = snn.indices[lo:hi], snn.data[lo:hi]
        not_self = nbrs != cell
        sums = np.bincount(labels[nbrs[not_self]], weights=weights[not_self], minlength=sizes.size)
        mean = np.where(targets, sums / np.maximum(sizes, 1), -np.inf)
        chosen = int(np.argmax(mean))
        labels[cell] = chosen
        sizes[chosen] += 1
        sizes[cluster] = 0
    return labels
