"""The shared-nearest-neighbor (SNN) graph of the kNN lists, as Seurat's ``ComputeSNN``,
with its numba kernel beside it."""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

from recall_dask.errors import InputError


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
    # Reverse lists: members[starts[m]:starts[m+1]] are the cells that have m as a neighbor.
    flat = knn.ravel()
    members = (np.argsort(flat, kind="stable") // k).astype(np.int64)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=n), out=starts[1:])
    min_shared = _min_shared(k, prune)
    n_chunks = max(1, min(n, 4 * numba.get_num_threads()))
    bounds = np.linspace(0, n, n_chunks + 1).astype(np.int64)
    row_nnz = np.zeros(n, dtype=np.int64)
    no_data = np.empty(0, dtype=np.float64)
    shared_neighbor_counts(
        knn, starts, members, min_shared, bounds, row_nnz, row_nnz[:0], no_data, True
    )
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_nnz, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int64)
    data = np.empty(indptr[-1], dtype=np.float64)
    shared_neighbor_counts(knn, starts, members, min_shared, bounds, indptr, indices, data, False)
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


@numba.njit(nogil=True, cache=True, parallel=True)
def shared_neighbor_counts(
    knn: np.ndarray,
    starts: np.ndarray,
    members: np.ndarray,
    min_shared: int,
    bounds: np.ndarray,
    row_ptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    count_only: bool,
) -> None:
    """Sparse A @ A.T (A the kNN indicator) row by row, keeping counts >= ``min_shared``.

    With ``count_only`` store each row's kept count in ``row_ptr``; otherwise ``row_ptr``
    is the indptr and each row's sorted columns and Jaccard weights are written."""
    n, k = knn.shape
    for c in numba.prange(bounds.size - 1):
        counts = np.zeros(n, dtype=np.int64)
        touched = np.empty(n, dtype=np.int64)
        for i in range(bounds[c], bounds[c + 1]):
            n_touched = 0
            for a in range(k):
                m = knn[i, a]
                for t in range(starts[m], starts[m + 1]):
                    j = members[t]
                    if counts[j] == 0:
                        touched[n_touched] = j
                        n_touched += 1
                    counts[j] += 1
            kept = 0
            if not count_only:
                touched[:n_touched].sort()
                pos = row_ptr[i]
            for t in range(n_touched):
                j = touched[t]
                if counts[j] >= min_shared:
                    if not count_only:
                        indices[pos + kept] = j
                        data[pos + kept] = counts[j] / (k + (k - counts[j]))
                    kept += 1
                counts[j] = 0
            if count_only:
                row_ptr[i] = kept
