"""Louvain as Seurat's ModularityOptimizer (Waltman & van Eck), ported step for step, with the
same ``java.util.Random`` stream: Seurat's ``RunModularityClustering`` with algorithm 1.

The hot loops (local moving, the network of clusters, the quality) are numba kernels on the
network's CSR arrays, free of dask; :func:`seurat_louvain` drives them, start by start.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from recall_dask.graph.network import ClusteringStopped

# --- numba kernels: Java's random stream, local moving, the network of clusters, quality ------

_JAVA_MULTIPLIER = np.uint64(0x5DEECE66D)
_JAVA_MASK = np.uint64((1 << 48) - 1)


@numba.njit(cache=True)
def java_random(seed: int) -> np.ndarray:
    """State of ``java.util.Random(seed)``: Seurat's clustering draws from this generator."""
    state = np.empty(1, dtype=np.uint64)
    state[0] = (np.uint64(seed) ^ _JAVA_MULTIPLIER) & _JAVA_MASK
    return state


@numba.njit(nogil=True, cache=True)
def _java_next31(state: np.ndarray) -> int:
    state[0] = (state[0] * _JAVA_MULTIPLIER + np.uint64(0xB)) & _JAVA_MASK
    return np.int64(state[0] >> np.uint64(17))


@numba.njit(nogil=True, cache=True)
def _java_next_int(state: np.ndarray, bound: int) -> int:
    """``Random.nextInt(bound)``, including Java's 32-bit overflow test for rejection."""
    if (bound & -bound) == bound:
        return (bound * _java_next31(state)) >> 31
    while True:
        bits = _java_next31(state)
        value = bits % bound
        if bits - value + (bound - 1) <= 2**31 - 1:
            return value


@numba.njit(nogil=True, cache=True)
def _random_permutation(state: np.ndarray, n: int) -> np.ndarray:
    """Seurat's ``Arrays2.generateRandomPermutation`` on the Java stream."""
    order = np.arange(n)
    for i in range(n):
        j = _java_next_int(state, n)
        order[i], order[j] = order[j], order[i]
    return order


@numba.njit(nogil=True, cache=True)
def _in_visit_order(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    node_weight: np.ndarray,
    order: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The network with node ``order[p]`` stored at position p, so that a sweep reads it
    front to back. Each node keeps its edges in their order, so every sum over them is the
    same, bit for bit."""
    n = order.size
    position = np.empty(n, dtype=indices.dtype)
    for p in range(n):
        position[order[p]] = p
    visit_indptr = np.empty(n + 1, dtype=np.int64)
    visit_indptr[0] = 0
    for p in range(n):
        visit_indptr[p + 1] = visit_indptr[p] + indptr[order[p] + 1] - indptr[order[p]]
    visit_indices = np.empty(visit_indptr[n], dtype=indices.dtype)
    visit_weights = np.empty(visit_indptr[n])
    visit_node_weight = np.empty(n)
    for p in range(n):
        node = order[p]
        visit_node_weight[p] = node_weight[node]
        out = visit_indptr[p]
        for e in range(indptr[node], indptr[node + 1]):
            visit_indices[out] = position[indices[e]]
            visit_weights[out] = weights[e]
            out += 1
    return visit_indptr, visit_indices, visit_weights, visit_node_weight


@numba.njit(nogil=True, cache=True)
def louvain_local_moving(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    node_weight: np.ndarray,
    cluster: np.ndarray,
    resolution: float,
    state: np.ndarray,
) -> tuple[bool, int]:
    """Move nodes, in a random order, to the neighboring cluster that most improves quality.

    Visits nodes cyclically until every node has stayed put once in a row; a node with no
    positive gain moves to an empty cluster. Relabels clusters 0..K-1 by their old ids.
    Returns (whether any node moved, number of clusters). ``cluster`` is updated in place.

    Exact speed-ups over Seurat's loop, with the same moves: the network is laid out in visit
    order; each node keeps its neighboring clusters and its summed edge weight to each until
    a neighbor moves (most of a sweep's nodes have no neighbor that moved since their last
    visit, so most visits skip the edges); cluster ids take the indices' dtype (int32 for
    fewer than 2^31 edges); and the edge loop has no branch, so the random reads of
    successive edges overlap. The known clusters take as much memory as the network's edges.
    """
    n = node_weight.size
    if n == 1:
        return False, 1
    order = _random_permutation(state, n)
    # Column 0: weight from the visited node to each cluster, column 1: the cluster's weight.
    # Side by side, a neighboring cluster's two reads share a cache line.
    weight = np.zeros((n, 2))
    cluster_size = np.zeros(n, dtype=indices.dtype)
    for i in range(n):  # summed in node order, as Seurat does
        weight[cluster[i], 1] += node_weight[i]
        cluster_size[cluster[i]] += 1
    unused = np.empty(n, dtype=indices.dtype)
    n_unused = 0
    for c in range(n - 1, -1, -1):
        if cluster_size[c] == 0:
            unused[n_unused] = c
            n_unused += 1
    indptr, indices, weights, node_weight = _in_visit_order(
        indptr, indices, weights, node_weight, order
    )
    label = np.empty(n, dtype=indices.dtype)  # cluster ids stay; only the nodes are reordered
    for p in range(n):
        label[p] = cluster[order[p]]
    # Node p's neighboring clusters, in the order Seurat meets them, and the weight to each:
    # known_cluster/known_weight[indptr[p]:indptr[p] + n_known[p]]; -1: look at the edges.
    n_known = np.full(n, -1, dtype=np.int32)
    known_cluster = np.empty(indices.size, dtype=indices.dtype)
    known_weight = np.empty(indices.size)
    update = False
    n_stable = 0
    node = 0
    while n_stable < n:
        first = indptr[node]
        if n_known[node] < 0:
            end = first
            for e in range(first, indptr[node + 1]):
                c = label[indices[e]]
                w = weight[c, 0]
                known_cluster[end] = c  # kept only if c is new: end <= e, always in range
                end += w == 0.0
                weight[c, 0] = w + weights[e]
            for t in range(first, end):
                c = known_cluster[t]
                known_weight[t] = weight[c, 0]
                weight[c, 0] = 0.0
            n_known[node] = end - first
        current = label[node]
        weight[current, 1] -= node_weight[node]
        cluster_size[current] -= 1
        if cluster_size[current] == 0:
            unused[n_unused] = current
            n_unused += 1
        best, best_gain = -1, 0.0
        for t in range(first, first + n_known[node]):
            c = known_cluster[t]
            gain = known_weight[t] - node_weight[node] * weight[c, 1] * resolution
            if gain > best_gain or (gain == best_gain and c < best):
                best, best_gain = c, gain
        if best_gain == 0.0:
            n_unused -= 1
            best = unused[n_unused]
        weight[best, 1] += node_weight[node]
        cluster_size[best] += 1
        if best == current:
            n_stable += 1
        else:
            label[node] = best
            n_stable = 1
            update = True
            for e in range(first, indptr[node + 1]):
                n_known[indices[e]] = -1
        node = node + 1 if node < n - 1 else 0
    relabel = np.full(n, -1, dtype=np.int64)
    n_clusters = 0
    for c in range(n):
        if cluster_size[c] > 0:
            relabel[c] = n_clusters
            n_clusters += 1
    for p in range(n):
        cluster[order[p]] = relabel[label[p]]
    return update, n_clusters


@numba.njit(nogil=True, cache=True)
def reduce_network(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    node_weight: np.ndarray,
    cluster: np.ndarray,
    n_clusters: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The network of clusters: summed node weights and between-cluster edge weights.

    Sums in Seurat's order: a cluster's nodes in increasing order, each node's edges in order,
    neighboring clusters listed as first met. One pass over the nodes appends each
    between-cluster edge to its cluster's bucket (edges read front to back, not cluster by
    cluster); each bucket is then summed and compacted in place. The buckets take as much
    memory as the network's edges, until the result is copied out.
    """
    n = cluster.size
    bucket_start = np.zeros(n_clusters + 1, dtype=np.int64)
    reduced_weight = np.zeros(n_clusters)
    for i in range(n):
        bucket_start[cluster[i] + 1] += indptr[i + 1] - indptr[i]
        reduced_weight[cluster[i]] += node_weight[i]
    bucket_start = np.cumsum(bucket_start)
    bucket_end = bucket_start[:-1].copy()
    other = np.empty(indptr[n], dtype=cluster.dtype)
    other_weight = np.empty(indptr[n])
    for i in range(n):
        c = cluster[i]
        end = bucket_end[c]
        for e in range(indptr[i], indptr[i + 1]):
            o = cluster[indices[e]]
            other[end] = o  # kept only if o != c: end stays within c's bucket
            other_weight[end] = weights[e]
            end += o != c
        bucket_end[c] = end
    reduced_indptr = np.zeros(n_clusters + 1, dtype=np.int64)
    weight_to = np.zeros(n_clusters)
    out = 0
    for c in range(n_clusters):
        begin = out
        for t in range(bucket_start[c], bucket_end[c]):
            o = other[t]
            w = weight_to[o]
            other[out] = o  # out <= t: overwrites only entries already read
            out += w == 0.0
            weight_to[o] = w + other_weight[t]
        for t in range(begin, out):
            other_weight[t] = weight_to[other[t]]
            weight_to[other[t]] = 0.0
        reduced_indptr[c + 1] = out
    return reduced_indptr, other[:out].copy(), other_weight[:out].copy(), reduced_weight


@numba.njit(nogil=True, cache=True)
def partition_quality(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray,
    node_weight: np.ndarray,
    cluster: np.ndarray,
    resolution: float,
) -> float:
    """Within-cluster edge weight minus resolution x squared cluster weights (Seurat's quality,
    up to a positive constant), for choosing the best random start."""
    quality = 0.0
    for i in range(node_weight.size):
        for e in range(indptr[i], indptr[i + 1]):
            if cluster[indices[e]] == cluster[i]:
                quality += weights[e]
    cluster_weight = np.zeros(node_weight.size)
    for i in range(node_weight.size):
        cluster_weight[cluster[i]] += node_weight[i]
    for c in range(node_weight.size):
        quality -= cluster_weight[c] * cluster_weight[c] * resolution
    return quality


# --- the algorithm, start by start ------------------------------------------------------------


def seurat_louvain(
    network: tuple[np.ndarray, ...],
    resolution: float,
    seed: int,
    n_starts: int,
    n_iterations: int,
    initial: list[int] | None,
    stop: threading.Event,
) -> np.ndarray:
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
