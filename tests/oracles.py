"""Slow, plain references that tests check the package's fast paths against, and helpers
that only tests use. Nothing in ``recall_dask`` imports this module."""

from __future__ import annotations

import dask
import dask.array as da
import numba
import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from recall_dask.errors import InputError
from recall_dask.nulls import NullModel
from recall_dask.nulls._kernels import count_inverse
from recall_dask.simulate import _SIZE
from recall_dask.stats.ranksums import _log_pvalue, pairwise_rank_sum_tests

# -- artificial genes as a lazy array (recall_dask.nulls) --------------------------------------


def _sample_chunk(span: np.ndarray, model: NullModel, seed: int) -> sp.csr_matrix:
    row_start, n_rows = (int(v) for v in span[0])
    return model.sample(row_start, n_rows, seed)


def artificial_genes(model: NullModel, n_cells_chunks: tuple[int, ...], seed: int) -> da.Array:
    """Lazy ``(N, p)`` array of artificial counts (float32 CSR blocks) with the given row chunks.

    Block values equal ``model.sample`` on the block's rows, so they are the same for any
    chunking and any scheduler.
    """
    sizes = np.asarray(n_cells_chunks, dtype=np.int64)
    if sizes.size == 0 or np.any(sizes < 0):
        raise InputError("n_cells_chunks must be a non-empty tuple of non-negative sizes")
    spans = np.stack([np.cumsum(sizes) - sizes, sizes], axis=1)
    return da.map_blocks(
        _sample_chunk,
        da.from_array(spans, chunks=(1, 2)),
        dask.delayed(model, traverse=False),
        seed,
        chunks=(tuple(int(s) for s in sizes), (model.n_genes,)),
        dtype=np.float32,
        meta=sp.csr_matrix((0, 0), dtype=np.float32),
    )


# -- the simulated counts' elementwise sampler (recall_dask.simulate) --------------------------


@numba.njit(nogil=True, cache=True)
def _nb_inverse_many(mu, u, r):
    out = np.empty(mu.size, dtype=np.int64)
    for i in range(mu.size):
        out[i] = count_inverse(u[i], mu[i], r)
    return out


def nb_quantile(mu: np.ndarray, u: np.ndarray, size: float = _SIZE) -> np.ndarray:
    """NB counts of means ``mu`` (variance ``mu + mu^2 / size``) by inversion of uniforms ``u``.

    Each count is the smallest ``k`` with ``F(k) > u`` for ``u`` in [0, 1), so uniform ``u``
    give NB counts. The elementwise sampler of :func:`recall_dask.simulate.simulate_block`, for
    testing it in isolation; returns an int64 array of the broadcast shape.
    """
    mu, u = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(u, dtype=np.float64))
    flat = _nb_inverse_many(np.ascontiguousarray(mu).ravel(), np.ascontiguousarray(u).ravel(), size)
    return flat.reshape(mu.shape)


# -- rank-sum tests (recall_dask.stats.ranksums) -----------------------------------------------


def rank_sum_log_pvalue(x: np.ndarray, y: np.ndarray) -> float:
    """Reference two-sided rank-sum log p-value of samples ``x`` against ``y`` (dense, slow).

    ``U = R_x - n_x (n_x + 1) / 2`` with mid-ranks over the union, ``mu = n_x n_y / 2``,
    ``sigma^2 = n_x n_y / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1)))`` over tie groups ``t``,
    ``z = (|U - mu| - 0.5) / sigma`` and ``p = min(1, 2 Phi(-z))``. When every value is tied
    (``sigma == 0``) this returns ``log p = 0`` where R returns NaN.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n_x, n_y = x.size, y.size
    n = n_x + n_y
    ranks = rankdata(np.concatenate([x, y]))
    _, t = np.unique(np.concatenate([x, y]), return_counts=True)
    delta = ranks[:n_x].sum() - n_x * (n_x + 1) / 2 - n_x * n_y / 2
    var = n_x * n_y / 12 * ((n + 1) - np.sum(t.astype(np.float64) ** 3 - t) / (n * (n - 1)))
    return float(_log_pvalue(np.array(delta), np.array(np.sqrt(max(var, 0.0)))))


def van_elteren_log_pvalue(x: np.ndarray, y: np.ndarray, x_strata, y_strata) -> float:
    """Reference van Elteren stratified rank-sum log p-value (dense, slow): in each stratum s,
    ``U_s - mu_s`` and its tie-corrected variance as in :func:`rank_sum_log_pvalue`, weighted by
    ``1 / (n_s + 1)``; ``z = |sum w_s (U_s - mu_s)| / sqrt(sum w_s^2 sigma_s^2)``, no continuity
    correction; strata where one sample is empty add nothing."""
    statistic, variance = 0.0, 0.0
    for stratum in np.union1d(x_strata, y_strata):
        xs, ys = x[x_strata == stratum], y[y_strata == stratum]
        if xs.size == 0 or ys.size == 0:
            continue
        n_x, n_y = xs.size, ys.size
        n = n_x + n_y
        ranks = rankdata(np.concatenate([xs, ys]))
        _, t = np.unique(np.concatenate([xs, ys]), return_counts=True)
        weight = 1.0 / (n + 1)
        statistic += weight * (ranks[:n_x].sum() - n_x * (n_x + 1) / 2 - n_x * n_y / 2)
        ties = np.sum(t.astype(np.float64) ** 3 - t) / (n * (n - 1))
        variance += weight**2 * n_x * n_y / 12 * ((n + 1) - ties)
    return float(_log_pvalue(np.array(statistic), np.array(np.sqrt(variance)), 0.0))


def pairwise_log_pvalues(
    data: da.Array, labels: np.ndarray, n_clusters: int, *, feature_block: int | None = None
) -> np.ndarray:
    """Natural-log rank-sum p-values for every cluster pair and feature, ``(n_pairs, n_features)``.

    Arguments as :func:`~recall_dask.stats.ranksums.per_feature_block`. Rows follow
    :func:`~recall_dask.stats.ranksums.cluster_pairs`. A pair gets ``log p = 0`` where all its
    values tie or one of its clusters is empty (R gives NaN). The result does not depend on the
    chunking.
    """
    return pairwise_rank_sum_tests(data, labels, n_clusters, feature_block=feature_block)[0]
