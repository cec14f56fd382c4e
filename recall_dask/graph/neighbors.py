"""Each cell's k nearest neighbors in the PCA embedding, as Seurat's ``FindNeighbors``.

Annoy, as Seurat's default ``nn.method = "annoy"`` (same library, trees, seed and insertion
order, so the same neighbors for the same embedding), or an exact KD-tree search
(``neighbors="exact"``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.spatial import cKDTree

from recall_dask import config
from recall_dask.errors import InputError

#: Seurat's FindNeighbors ``n.trees``: Annoy trees per index.
ANNOY_TREES = 50


def _checked_embedding(embedding: np.ndarray, k: int) -> np.ndarray:
    x = np.ascontiguousarray(embedding, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"embedding must be 2-D (cells x components), got shape {x.shape}")
    if k < 1 or x.shape[0] < k:
        raise InputError(f"fewer cells ({x.shape[0]}) than neighbors ({k})")
    return x


def annoy_neighbors(embedding: np.ndarray, k: int = 20, n_trees: int = ANNOY_TREES) -> np.ndarray:
    """Approximate Euclidean kNN as Seurat's ``FindNeighbors`` default (``nn.method =
    "annoy"``), an (n_cells, k) int64 array of neighbor lists ordered by distance.

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
    batch = config.get("annoy-query-batch")  # cells per query task; each answer on its own

    def query(start: int) -> None:
        # A search gathers n_trees * k candidates or every cell, so it always finds k.
        for cell in range(start, min(start + batch, n)):
            lists[cell] = index.get_nns_by_item(cell, k)

    with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="annoy") as pool:
        list(pool.map(query, range(0, n, batch)))
    return lists


def exact_neighbors(embedding: np.ndarray, k: int = 20) -> np.ndarray:
    """Exact Euclidean kNN, each list starting with the cell itself (Seurat ``k.param``).

    Returns an (n_cells, k) int64 array. Within a row, neighbors are ordered by
    (distance, index); the cell itself is always column 0, even among exact duplicates.
    Which of several equidistant cells fills the last slot is up to the KD-tree, which
    is deterministic for a given input.
    """
    x = _checked_embedding(embedding, k)
    n = x.shape[0]
    tree = cKDTree(x)
    # Query in the tree's own leaf order: consecutive queries then walk the same branches,
    # which halves the time on a million cells. The neighbors do not change.
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


#: How neighbors are found, by ``--neighbors`` (:data:`recall_dask.choices.NEIGHBOR_SEARCHES`).
NEIGHBOR_SEARCHES = {"annoy": annoy_neighbors, "exact": exact_neighbors}


def nearest_neighbors(embedding: np.ndarray, k: int, method: str) -> np.ndarray:
    """Each cell's k neighbor lists by ``method`` (a key of :data:`NEIGHBOR_SEARCHES`)."""
    return NEIGHBOR_SEARCHES[method](embedding, k)
