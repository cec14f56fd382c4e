"""Pairwise Wilcoxon rank-sum tests between clusters, for every feature, as log p-values.

The test is R's ``wilcox.test(exact=FALSE, correct=TRUE)`` (equivalently
``scipy.stats.mannwhitneyu(method="asymptotic", use_continuity=True)``), two-sided:
normal approximation with tie and continuity correction. P-values are returned as natural
logs computed in log space, so they stay finite where ``p`` itself underflows to 0.

Work is split by feature blocks. Each task gathers its column block for all cells, regroups the
nonzeros by (feature, cluster) and sorts each group, then merges all the clusters' sorted
nonzeros of a feature in one pass that counts, for every cluster pair at once, the members of one
cluster ranked below each member of the other; all zeros form a single tie group counted in
closed form. The regrouping and the merge are numba kernels (:mod:`recall_dask.stats._kernels`).
The grouping (:class:`ClusterGroups`) also yields per-cluster detection counts and sums, so
other pair tests (:mod:`recall_dask.methods.countsplit`) run on the same tasks through
:func:`per_feature_block`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from scipy.special import log_ndtr

from recall_dask import config
from recall_dask.errors import InputError
from recall_dask.progress import compute
from recall_dask.stats._kernels import group_nonzeros, pairwise_rank_sum_stats

_LOG2 = np.log(2.0)


def feature_block_for(n_cells: int) -> int:
    """Features per pairwise-test task (and per stored tile): a power of two in 128..1024.

    Each task holds its block for all cells, so wide blocks for few cells keep the number of
    tasks and their overhead small, and narrow blocks for many cells keep task memory bounded:
    a task holds about ``recall.rank-sum-task-entries`` cells x features.
    """
    entries = config.get("rank-sum-task-entries")
    width = 2 ** int(np.log2(max(1, entries // max(1, n_cells))))
    return int(np.clip(width, 128, 1024))


def cluster_pairs(n_clusters: int) -> np.ndarray:
    """All cluster pairs ``(a, b)`` with ``a < b`` in row-major order, shape ``(n_pairs, 2)``."""
    a, b = np.triu_indices(n_clusters, k=1)
    return np.stack([a, b], axis=1).astype(np.int64)


def _log_pvalue(delta: np.ndarray, sigma: np.ndarray, continuity: float = 0.5) -> np.ndarray:
    """Two-sided log p of the normal approximation, with a continuity correction; 0 where
    ``sigma == 0``."""
    tested = sigma > 0
    z = (np.abs(delta[tested]) - continuity) / sigma[tested]
    log_p = np.zeros(np.shape(delta))
    log_p[tested] = np.minimum(0.0, _LOG2 + log_ndtr(-z))
    return log_p


@dataclass(frozen=True)
class ClusterGroups:
    """One feature block's nonzeros grouped by (feature, cluster), each group sorted ascending.

    The nonzeros of feature ``j`` in cluster ``c`` are ``values[offsets[g]:offsets[g + 1]]`` with
    ``g = j * n_clusters + c``; ``sizes[c]`` counts the cells of cluster ``c``. Every statistic
    a pair test needs (rank sums, detection rates, sums of values) comes from this one regrouping.
    """

    values: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    n_features: int

    @classmethod
    def of(cls, blocks: list, labels: np.ndarray, n_clusters: int) -> ClusterGroups:
        """Group a column block given as its row blocks (CSR or dense) for all cells."""
        rows = [sp.csr_matrix(b) for b in blocks]
        block = rows[0] if len(rows) == 1 else sp.vstack(rows, format="csr")  # no needless copy
        n_features = block.shape[1]
        values, offsets = group_nonzeros(
            block.indptr, block.indices, block.data, labels, n_features, n_clusters
        )
        for start, stop in pairwise(offsets.tolist()):
            values[start:stop].sort()
        sizes = np.bincount(labels, minlength=n_clusters).astype(np.int64)
        return cls(values, offsets, sizes, n_features)

    def log_pvalues(self, pairs: np.ndarray) -> np.ndarray:
        """Rank-sum log p-values ``(n_pairs, n_features)``."""
        return self.rank_sum_tests(pairs)[0]

    def rank_sum_tests(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rank-sum log p-values and directions, each ``(n_pairs, n_features)``: the direction
        is +1 where the pair's first cluster ranks higher, -1 where the second does, else 0."""
        delta, sigma = pairwise_rank_sum_stats(
            self.values, self.offsets, self.sizes, pairs, self.n_features
        )
        return _log_pvalue(delta, sigma), np.sign(delta).astype(np.int8)

    def nonzero_counts(self) -> np.ndarray:
        """Cells with a nonzero value, ``(n_features, n_clusters)``."""
        return np.diff(self.offsets).reshape(self.n_features, self.sizes.size)

    def sums(self, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Sum of ``transform(value)`` over each group's nonzeros, ``(n_features, n_clusters)``;
        ``transform(0)`` must be 0, so the zeros add nothing."""
        group = np.repeat(np.arange(self.offsets.size - 1), np.diff(self.offsets))
        totals = np.bincount(group, weights=transform(self.values), minlength=self.offsets.size - 1)
        return totals.reshape(self.n_features, self.sizes.size)


@dataclass(frozen=True)
class StratifiedGroups:
    """One feature block's nonzeros grouped by cluster within each stratum of cells (groups of
    like depth, or batches): the same statistics as :class:`ClusterGroups`, summed over the
    strata, and van Elteren's stratified rank-sum test.

    Van Elteren's test compares two clusters within each stratum and adds the strata's
    centred rank sums with weights ``1 / (n_s + 1)``, ``n_s`` the pair's cells in stratum s
    (the locally most powerful weights when the shift is the same in every stratum). A
    difference between clusters that only the strata explain (one cluster's cells deeper
    than the other's) then adds nothing. Each stratum's statistic and tie-corrected variance
    come from the same kernel as the unstratified test; the sum is tested by the normal
    approximation without continuity correction, as the strata's statistics move in steps of
    different sizes. A stratum where a cluster has no cells contributes nothing to its pairs.
    """

    strata: tuple[ClusterGroups, ...]

    @classmethod
    def of(
        cls, blocks: list, labels: np.ndarray, n_clusters: int, strata: np.ndarray
    ) -> StratifiedGroups:
        """Group a column block given as its row blocks for all cells, ``strata[i]`` being the
        stratum of cell i."""
        rows = [sp.csr_matrix(b) for b in blocks]
        block = rows[0] if len(rows) == 1 else sp.vstack(rows, format="csr")
        members = np.argsort(strata, kind="stable")
        bounds = np.searchsorted(strata[members], np.arange(int(strata.max()) + 2))
        return cls(
            tuple(
                ClusterGroups.of([block[members[lo:hi]]], labels[members[lo:hi]], n_clusters)
                for lo, hi in pairwise(bounds.tolist())
            )
        )

    @property
    def sizes(self) -> np.ndarray:
        return sum(groups.sizes for groups in self.strata)

    def log_pvalues(self, pairs: np.ndarray) -> np.ndarray:
        """Van Elteren log p-values ``(n_pairs, n_features)``."""
        return self.rank_sum_tests(pairs)[0]

    def rank_sum_tests(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Van Elteren log p-values and directions, as :meth:`ClusterGroups.rank_sum_tests`."""
        statistic, variance = 0.0, 0.0
        for groups in self.strata:
            delta, sigma = pairwise_rank_sum_stats(
                groups.values, groups.offsets, groups.sizes, pairs, groups.n_features
            )
            weight = 1.0 / (groups.sizes[pairs].sum(axis=1) + 1.0)[:, None]
            statistic = statistic + weight * delta
            variance = variance + (weight * sigma) ** 2
        statistic = np.asarray(statistic)
        return _log_pvalue(statistic, np.sqrt(variance), 0.0), np.sign(statistic).astype(np.int8)

    def nonzero_counts(self) -> np.ndarray:
        """Cells with a nonzero value, ``(n_features, n_clusters)``."""
        return sum(groups.nonzero_counts() for groups in self.strata)

    def sums(self, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """As :meth:`ClusterGroups.sums`, over all strata."""
        return sum(groups.sums(transform) for groups in self.strata)


def _pair_tests_of_block(
    block,
    labels: np.ndarray,
    n_clusters: int,
    pairs: np.ndarray,
    strata: np.ndarray | None,
    func,
    *args,
) -> np.ndarray:
    """One task: a feature block's values grouped by cluster (within each stratum, if given),
    then ``func`` over the pairs."""
    if strata is None:
        groups = ClusterGroups.of([block], labels, n_clusters)
    else:
        groups = StratifiedGroups.of([block], labels, n_clusters, strata)
    return func(groups, pairs, *args)


def per_feature_block(
    data: da.Array,
    labels: np.ndarray,
    n_clusters: int,
    func: Callable[..., np.ndarray],
    *args: Any,
    lead: tuple[int, ...],
    dtype: Any = np.float64,
    feature_block: int | None = None,
    strata: np.ndarray | None = None,
) -> da.Array:
    """Lazy ``(*lead, n_features)`` array of ``func(groups, pairs, *args)`` over every feature
    block of ``data``, as one Blockwise layer.

    ``groups`` is the block's :class:`ClusterGroups`, or with ``strata`` (one stratum id
    ``0..S-1`` per cell) its :class:`StratifiedGroups`; ``pairs`` is :func:`cluster_pairs`, and
    ``func`` returns an array of shape ``(*lead, block width)``. ``data`` is a dask array
    ``(n_cells, n_features)`` (expression values, mostly zeros; negative values are ranked
    correctly too) whose blocks are scipy sparse or dense matrices; ``labels`` holds a cluster
    id in ``0..n_clusters-1`` per cell. One task per block of features (``data``'s column
    chunks, or ``feature_block`` columns) holds that block for all cells in memory.
    """
    labels = np.asarray(labels)
    n_cells = data.shape[0]
    if labels.shape != (n_cells,):
        raise InputError(f"labels has shape {labels.shape}, expected ({n_cells},)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_clusters):
        raise InputError(f"labels must lie in 0..{n_clusters - 1}")
    if feature_block is not None and feature_block < 1:
        raise InputError(f"feature_block must be positive, got {feature_block}")
    if strata is not None:
        strata = dask.delayed(np.asarray(strata, dtype=np.int64), pure=True)
    data = data.rechunk({0: -1, **({1: feature_block} if feature_block else {})})
    return da.map_blocks(
        _pair_tests_of_block,
        data,
        dask.delayed(labels.astype(np.int64), pure=True),
        n_clusters,
        dask.delayed(cluster_pairs(n_clusters), pure=True),
        strata,
        func,
        *args,
        chunks=(*((size,) for size in lead), data.chunks[1]),
        new_axis=list(range(len(lead) - 1)),
        dtype=dtype,
        meta=np.empty((0,) * (len(lead) + 1), dtype=dtype),
    )


def _tests_and_directions(groups: ClusterGroups, pairs: np.ndarray) -> np.ndarray:
    log_p, direction = groups.rank_sum_tests(pairs)
    return np.stack([log_p, direction.astype(np.float64)])


def pairwise_rank_sum_tests(
    data: da.Array,
    labels: np.ndarray,
    n_clusters: int,
    *,
    feature_block: int | None = None,
    strata: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Natural-log rank-sum p-values for every cluster pair and feature, and the direction of
    each difference (+1 where the pair's first cluster ranks higher, -1 where the second does,
    else 0), each ``(n_pairs, n_features)``, from the same tasks.

    Arguments as :func:`per_feature_block`; with ``strata``, van Elteren's test within them
    (:class:`StratifiedGroups`). Rows follow :func:`cluster_pairs`. A pair gets ``log p = 0``
    where all its values tie or one of its clusters is empty (R gives NaN). The result does
    not depend on the chunking.
    """
    n_pairs = n_clusters * (n_clusters - 1) // 2
    if data.shape[1] == 0:
        return np.zeros((n_pairs, 0)), np.zeros((n_pairs, 0), dtype=np.int8)
    lazy = per_feature_block(
        data,
        labels,
        n_clusters,
        _tests_and_directions,
        lead=(2, n_pairs),
        feature_block=feature_block,
        strata=strata,
    )
    (tests,) = compute(lazy)
    return tests[0], tests[1].astype(np.int8)


def pair_matrix(per_pair: np.ndarray, n_clusters: int) -> np.ndarray:
    """Symmetric clusters x clusters matrix of per-pair counts (in :func:`cluster_pairs` order),
    -1 on the diagonal."""
    matrix = np.full((n_clusters, n_clusters), -1, dtype=np.int64)
    a, b = cluster_pairs(n_clusters).T
    matrix[a, b] = matrix[b, a] = per_pair
    return matrix
