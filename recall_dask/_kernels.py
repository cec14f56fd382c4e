"""Numba kernels: pure functions on numpy arrays, free of dask, safe to run in worker threads."""

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def group_nonzeros(indptr, indices, data, labels, n_features, n_clusters):
    """Regroup the nonzeros of a CSR matrix by (feature, cluster) with a counting sort.

    Rows are cells (``labels[i]`` is the cluster of row ``i``), columns are features.
    Returns ``(values, offsets)``: the nonzeros of feature ``j`` in cluster ``c`` are
    ``values[offsets[j * n_clusters + c]:offsets[j * n_clusters + c + 1]]``, in row order
    (the caller sorts each group; numpy's sort is much faster than numba's).
    Explicitly stored zeros are dropped, so they count as zeros of the cluster.
    """
    n_groups = n_features * n_clusters
    offsets = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(indptr.size - 1):
        base = labels[i]
        for k in range(indptr[i], indptr[i + 1]):
            if data[k] != 0:
                offsets[indices[k] * n_clusters + base + 1] += 1
    for g in range(n_groups):
        offsets[g + 1] += offsets[g]
    cursor = offsets[:-1].copy()
    values = np.empty(offsets[n_groups], dtype=data.dtype)
    for i in range(indptr.size - 1):
        base = labels[i]
        for k in range(indptr[i], indptr[i + 1]):
            if data[k] != 0:
                g = indices[k] * n_clusters + base
                values[cursor[g]] = data[k]
                cursor[g] += 1
    return values, offsets


@numba.njit(nogil=True, cache=True, inline="always")
def _tie_term(t):
    """``t^3 - t`` in floating point (exact up to t ~ 2e5), without a call to pow."""
    f = float(t)
    return f * f * f - f


@numba.njit(nogil=True, cache=True)
def _rank_sum_pair(values, a0, a1, b0, b1, n_a, n_b):
    """Rank sum of group a and the tie term sum(t^3 - t) over the union of groups a and b.

    ``values[a0:a1]`` and ``values[b0:b1]`` are the sorted nonzeros of each group; the
    remaining ``n_a - (a1 - a0)`` and ``n_b - (b1 - b0)`` members are zeros. One merge pass
    walks the tie groups in increasing order; the zeros form one tie group, placed after the
    negative values (if any) and before the positive ones.
    """
    z_a = n_a - (a1 - a0)
    z = z_a + n_b - (b1 - b0)
    pos = 0.0  # number of union members ranked so far
    rank_sum = 0.0
    ties = 0.0
    zeros_done = False
    ia, ib = a0, b0
    while ia < a1 or ib < b1:
        take_a = ib >= b1 or (ia < a1 and values[ia] <= values[ib])
        v = values[ia] if take_a else values[ib]
        if not zeros_done and v > 0:
            rank_sum += z_a * (pos + (z + 1) / 2.0)
            ties += _tie_term(z)
            pos += z
            zeros_done = True
        t_a = 0
        while ia < a1 and values[ia] == v:
            ia += 1
            t_a += 1
        t_b = 0
        while ib < b1 and values[ib] == v:
            ib += 1
            t_b += 1
        t = t_a + t_b
        rank_sum += t_a * (pos + (t + 1) / 2.0)
        if t > 1:
            ties += _tie_term(t)
        pos += t
    if not zeros_done:
        rank_sum += z_a * (pos + (z + 1) / 2.0)
        ties += _tie_term(z)
    return rank_sum, ties


@numba.njit(nogil=True, cache=True)
def pairwise_rank_sum_stats(values, offsets, sizes, pairs, n_features):
    """Centred rank-sum statistic ``U - mu`` and its tie-corrected ``sigma`` per pair and feature.

    ``values, offsets`` come from :func:`group_nonzeros`, each group sorted ascending;
    ``sizes[c]`` is the number of cells in cluster ``c`` and ``pairs`` an ``(n_pairs, 2)`` array
    of cluster ids. Cost per pair and feature is linear in the nonzeros of the two clusters.
    ``sigma`` is 0 when every value of the union is tied or a cluster is empty (then
    ``U - mu`` is 0 too).
    """
    n_clusters = sizes.size
    n_pairs = pairs.shape[0]
    delta = np.zeros((n_pairs, n_features))
    sigma = np.zeros((n_pairs, n_features))
    for p in range(n_pairs):
        a, b = pairs[p, 0], pairs[p, 1]
        n_a, n_b = sizes[a], sizes[b]
        if n_a == 0 or n_b == 0:
            continue
        n = float(n_a + n_b)
        for j in range(n_features):
            ga, gb = j * n_clusters + a, j * n_clusters + b
            rank_sum, ties = _rank_sum_pair(
                values, offsets[ga], offsets[ga + 1], offsets[gb], offsets[gb + 1], n_a, n_b
            )
            delta[p, j] = rank_sum - n_a * (n_a + 1) / 2.0 - n_a * n_b / 2.0
            var = n_a * n_b / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))
            sigma[p, j] = np.sqrt(var) if var > 0 else 0.0
    return delta, sigma


@numba.njit(nogil=True, cache=True)
def accumulate_gram(indptr, indices, data, out):
    """Add X^T X of a CSR block to the upper triangle of ``out`` (features x features).

    Each row adds the products of its nonzero pairs only, so the cost is the sum of squared
    row counts, not rows x features^2. Column indices need not be sorted.
    """
    for row in range(indptr.size - 1):
        start, stop = indptr[row], indptr[row + 1]
        for a in range(start, stop):
            feature_a, value_a = indices[a], data[a]
            for b in range(a, stop):
                feature_b = indices[b]
                if feature_a <= feature_b:
                    out[feature_a, feature_b] += value_a * data[b]
                else:
                    out[feature_b, feature_a] += value_a * data[b]


@numba.njit(nogil=True, cache=True)
def centre_and_scale_gram(upper, col_sum, mean, inv_std, n_rows):
    """Full symmetric (X - 1 mean^T)^T (X - 1 mean^T) scaled by inv_std on both sides.

    ``upper`` holds the upper triangle of X^T X and ``col_sum`` the column sums of X.
    """
    n = col_sum.size
    gram = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            centred = (
                upper[i, j]
                - mean[i] * col_sum[j]
                - col_sum[i] * mean[j]
                + n_rows * mean[i] * mean[j]
            )
            gram[i, j] = gram[j, i] = centred * inv_std[i] * inv_std[j]
    return gram


@numba.njit(nogil=True, cache=True, parallel=True)
def shared_neighbour_counts(
    knn, starts, members, min_shared, bounds, row_ptr, indices, data, count_only
):
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
