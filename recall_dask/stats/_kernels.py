"""Numba kernels of the all-pairs rank-sum tests, free of dask: regroup a CSR feature block's
nonzeros by (feature, cluster), and merge the clusters' sorted values once per feature into
the rank-sum statistic of every cluster pair (:mod:`recall_dask.stats.ranksums`)."""

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def group_nonzeros(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    labels: np.ndarray,
    n_features: int,
    n_clusters: int,
) -> tuple[np.ndarray, np.ndarray]:
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
def _tie_term(t: float) -> float:
    """``t^3 - t`` in floating point (exact up to t ~ 2e5), without a call to pow."""
    f = float(t)
    return f * f * f - f


@numba.njit(nogil=True, cache=True)
def _next_tie_group(
    values: np.ndarray, head: np.ndarray, end: np.ndarray, tied: np.ndarray, present: np.ndarray
) -> tuple[float, int]:
    """Take the smallest value left at the heads of the clusters' sorted lists, with all its
    copies: ``tied[c]`` gets cluster c's count and ``present`` lists the clusters that have it.
    Returns (value, number of clusters present); value is +inf once every list is used up."""
    v = np.inf
    for c in range(head.size):
        if head[c] < end[c] and values[head[c]] < v:
            v = values[head[c]]
    n_present = 0
    if v == np.inf:
        return v, n_present
    for c in range(head.size):
        t = 0
        while head[c] < end[c] and values[head[c]] == v:
            head[c] += 1
            t += 1
        if t:
            tied[c] = t
            present[n_present] = c
            n_present += 1
    return v, n_present


@numba.njit(nogil=True, cache=True)
def _rank_one_tie_group(
    tied: np.ndarray,
    present: np.ndarray,
    n_present: int,
    seen: np.ndarray,
    below: np.ndarray,
    own: np.ndarray,
    cross: np.ndarray,
    count_ties: bool,
) -> None:
    """Fold one tie group into the running cross counts and tie terms, then mark it ranked.

    ``below[a, b]`` sums, over members of a, the members of b ranked below them (ties with
    them count half). ``own[a]`` and ``cross[a, b]`` split the tie term of pair (a, b),
    ``(t_a + t_b)^3 - (t_a + t_b)``, into ``t_a^3 - t_a``, ``t_b^3 - t_b`` and the rest,
    ``3 t_a t_b (t_a + t_b)``, so that one pass over the union serves every pair.
    """
    for i in range(n_present):
        a = present[i]
        t_a = tied[a]
        for b in range(seen.size):
            below[a, b] += t_a * (seen[b] + 0.5 * tied[b])
        if count_ties:
            own[a] += _tie_term(t_a)
            for k in range(i + 1, n_present):
                t_b = tied[present[k]]
                cross[a, present[k]] += 3.0 * t_a * t_b * (t_a + t_b)
    for i in range(n_present):
        a = present[i]
        seen[a] += tied[a]
        tied[a] = 0.0


@numba.njit(nogil=True, cache=True)
def pairwise_rank_sum_stats(
    values: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, pairs: np.ndarray, n_features: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centred rank-sum statistic ``U - mu`` and its tie-corrected ``sigma`` per pair and feature.

    ``values, offsets`` come from :func:`group_nonzeros`, each group sorted ascending;
    ``sizes[c]`` is the number of cells in cluster ``c`` and ``pairs`` an ``(n_pairs, 2)`` array
    of cluster ids. ``sigma`` is 0 when every value of the union is tied or a cluster is empty
    (then ``U - mu`` is 0 too).

    One merge of all the clusters' sorted lists per feature serves every pair: walking the tie
    groups in increasing order with each cluster's count of members ranked so far gives, for
    each pair (a, b), ``U_a - n_a (n_a + 1) / 2`` = the members of b below each member of a
    (ties half). All zeros form one tie group, placed after the negative values (if any) and
    before the positive ones. Cost per feature is the clusters times its nonzeros, however many
    pairs there are, in loops over clusters that vectorize. Every count is an integer or a
    half-integer, so ``U`` is exact; the zeros' tie term is computed per pair directly.
    """
    n_clusters = sizes.size
    delta = np.zeros((pairs.shape[0], n_features))
    sigma = np.zeros((pairs.shape[0], n_features))
    below = np.zeros((n_clusters, n_clusters))
    cross = np.zeros((n_clusters, n_clusters))
    own = np.zeros(n_clusters)
    seen = np.zeros(n_clusters)
    tied = np.zeros(n_clusters)
    zeros = np.zeros(n_clusters)
    head = np.empty(n_clusters, dtype=np.int64)
    end = np.empty(n_clusters, dtype=np.int64)
    present = np.empty(n_clusters, dtype=np.int64)
    every = np.arange(n_clusters)
    for j in range(n_features):
        below[:] = 0.0
        cross[:] = 0.0
        own[:] = 0.0
        seen[:] = 0.0
        for c in range(n_clusters):
            head[c], end[c] = offsets[j * n_clusters + c], offsets[j * n_clusters + c + 1]
            zeros[c] = sizes[c] - (end[c] - head[c])
        zeros_done = False
        while True:
            v, n_present = _next_tie_group(values, head, end, tied, present)
            if not zeros_done and v > 0:
                # The zeros rank just before this group (held in tied/present meanwhile).
                zero_counts = zeros.copy()  # ranking a group clears its counts
                _rank_one_tie_group(zero_counts, every, n_clusters, seen, below, own, cross, False)
                zeros_done = True
            if n_present == 0:
                break
            _rank_one_tie_group(tied, present, n_present, seen, below, own, cross, True)
        for p in range(pairs.shape[0]):
            a, b = pairs[p, 0], pairs[p, 1]
            n_a, n_b = float(sizes[a]), float(sizes[b])
            if n_a == 0 or n_b == 0:
                continue
            n = n_a + n_b
            lo, hi = min(a, b), max(a, b)
            ties = _tie_term(zeros[a] + zeros[b]) + own[a] + own[b] + cross[lo, hi]
            delta[p, j] = below[a, b] - n_a * n_b / 2.0
            var = n_a * n_b / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))
            sigma[p, j] = np.sqrt(var) if var > 0 else 0.0
    return delta, sigma
