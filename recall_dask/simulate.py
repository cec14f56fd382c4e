"""Simulated counts with known groups, for tests and benchmarks.

Negative binomial counts: each gene has a base mean drawn from a log-normal; in each group a
fraction ``de_prob`` of genes is differentially expressed by a log-normal fold change up or
down; each cell has a log-normal library size factor (median 1, sd of its log ``depth_sd``,
default 0.3; real data sit at 0.4 to 0.6: PBMC 3k 0.43, sc_mixology 0.51). The count of gene
``j`` in cell ``i`` is negative binomial with mean ``mu = group_mean[group(i), j] *
size_factor[i]`` and variance ``mu + 0.2 mu^2`` (size ``r = 5``), the gamma-Poisson mixture of
typical UMI data.

Each count is drawn exactly by inversion of the NB distribution function with one uniform per
entry: the count is the smallest ``k`` with ``F(k) > u``. Most entries are zero and are
decided without evaluating ``F``: ``P(X > 0) <= E[X] = mu`` (Markov), so ``u < 1 - mu``
implies ``u < F(0)``. Otherwise ``F(0) = (r / (r + mu))^r`` is computed (in log space), and
for ``u >= F(0)`` the pmf is summed upwards by its recurrence
``P(k + 1) = P(k) (k + r) / (k + 1) mu / (r + mu)`` until the sum exceeds ``u``. This is exact
up to floating-point rounding, which matters only for ``u`` within about 1e-16 of 1. The
counts go straight into CSR arrays; no dense count matrix is formed.

Rows are generated in fixed blocks of 1,024 cells, each with its own random generator keyed by
(seed, block): first the block's size factors, then its uniforms row by row. So any row range
can be produced on its own, and streamed and in-memory simulations are identical.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import anndata as ad
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recall_dask.choices import DEPTH_SD, LOG_MEAN
from recall_dask.errors import InputError
from recall_dask.io import write_10x_h5, write_stream
from recall_dask.io.storage import StorageOptions
from recall_dask.nulls._kernels import count_inverse

_BLOCK_ROWS = 1024  # divides the default chunk size, so no block is drawn twice
_STREAM = 0x73696D  # "sim"
_DISPERSION = 0.2  # NB variance = mu + 0.2 mu^2, a typical UMI overdispersion
_SIZE = 1 / _DISPERSION  # NB size r
#: Uniforms held at a time while drawing a block (2 MB of float64); the rows of a block are
#: drawn in batches of at most this many entries, which does not change the random stream.
_BATCH_ENTRIES = 1 << 18
#: Threads that draw row chunks ahead of the writer (each holds one chunk and one batch).
_THREADS = min(4, os.cpu_count() or 1)
_T = TypeVar("_T")


@numba.njit(nogil=True, cache=True)
def _nb_csr_rows(
    means: np.ndarray,
    groups: np.ndarray,
    size_factors: np.ndarray,
    uniforms: np.ndarray,
    r: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NB counts of a batch of rows as CSR arrays (indptr int64, indices int32, data float32).

    Row ``i`` has means ``means[groups[i]] * size_factors[i]``; ``uniforms`` is rows x genes.
    """
    n_rows, n_genes = uniforms.shape
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    capacity = max(1024, n_rows * n_genes // 16)
    indices = np.empty(capacity, dtype=np.int32)
    data = np.empty(capacity, dtype=np.float32)
    nnz = 0
    for i in range(n_rows):
        row_means = means[groups[i]]
        factor = size_factors[i]
        for j in range(n_genes):
            mu = row_means[j] * factor
            u = uniforms[i, j]
            if u < 1.0 - mu:
                continue
            k = count_inverse(u, mu, r)
            if k == 0:
                continue
            if nnz == capacity:
                capacity *= 2
                grown_indices = np.empty(capacity, dtype=np.int32)
                grown_indices[:nnz] = indices[:nnz]
                indices = grown_indices
                grown_data = np.empty(capacity, dtype=np.float32)
                grown_data[:nnz] = data[:nnz]
                data = grown_data
            indices[nnz] = j
            data[nnz] = k
            nnz += 1
        indptr[i + 1] = nnz
    return indptr, indices[:nnz].copy(), data[:nnz].copy()


def group_means(
    n_genes: int, n_groups: int, de_prob: float, seed: int, log_mean: float = LOG_MEAN
) -> np.ndarray:
    """Mean expression (groups x genes) before library-size scaling."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, 0]))
    base = rng.lognormal(mean=log_mean, sigma=2.3, size=n_genes)
    means = np.tile(base, (n_groups, 1))
    if n_groups > 1:
        de = rng.random((n_groups, n_genes)) < de_prob
        fold = rng.lognormal(mean=1.0, sigma=0.4, size=(n_groups, n_genes))
        direction = np.where(rng.random((n_groups, n_genes)) < 0.5, 1.0, -1.0)
        means *= np.where(de, fold**direction, 1.0)
    return means


def group_labels(n_cells: int, n_groups: int) -> np.ndarray:
    """Balanced group of each cell, interleaved so every row range holds every group."""
    return np.arange(n_cells) % n_groups


def _simulate_rng_block(block: int, means: np.ndarray, seed: int, depth_sd: float) -> sp.csr_matrix:
    """The counts of the 1,024 cells of RNG block ``block`` as CSR float32."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, 1, block]))
    first = block * _BLOCK_ROWS
    groups = np.arange(first, first + _BLOCK_ROWS) % means.shape[0]
    size_factors = rng.lognormal(mean=0.0, sigma=depth_sd, size=_BLOCK_ROWS)
    n_genes = means.shape[1]
    batch = max(1, min(_BLOCK_ROWS, _BATCH_ENTRIES // n_genes))
    indptrs, indices, data = [np.zeros(1, dtype=np.int64)], [], []
    for start in range(0, _BLOCK_ROWS, batch):
        stop = min(start + batch, _BLOCK_ROWS)
        uniforms = rng.random((stop - start, n_genes))
        ptr, idx, val = _nb_csr_rows(
            means, groups[start:stop], size_factors[start:stop], uniforms, _SIZE
        )
        indptrs.append(ptr[1:] + indptrs[-1][-1])
        indices.append(idx)
        data.append(val)
    parts = (np.concatenate(data), np.concatenate(indices), np.concatenate(indptrs))
    return sp.csr_matrix(parts, shape=(_BLOCK_ROWS, n_genes))


def simulate_block(
    first_row: int, n_rows: int, means: np.ndarray, seed: int, depth_sd: float = DEPTH_SD
) -> sp.csr_matrix:
    """Counts of cells ``first_row .. first_row + n_rows - 1`` as CSR float32."""
    first_block, last_block = first_row // _BLOCK_ROWS, (first_row + n_rows - 1) // _BLOCK_ROWS
    blocks = range(first_block, last_block + 1)
    pieces = [_simulate_rng_block(b, means, seed, depth_sd) for b in blocks]
    stacked = pieces[0] if len(pieces) == 1 else sp.vstack(pieces, format="csr")
    start = first_row - first_block * _BLOCK_ROWS
    return stacked[start : start + n_rows]


def simulate(
    n_cells: int,
    n_genes: int,
    n_groups: int,
    *,
    de_prob: float = 0.1,
    seed: int = 0,
    log_mean: float = LOG_MEAN,
    depth_sd: float = DEPTH_SD,
) -> ad.AnnData:
    """An in-memory AnnData of simulated counts with the true group in ``obs['group']``."""
    means, obs, var = _design(n_cells, n_genes, n_groups, de_prob, seed, log_mean, depth_sd)
    return ad.AnnData(X=simulate_block(0, n_cells, means, seed, depth_sd), obs=obs, var=var)


def write_simulated(
    store: str | Path,
    n_cells: int,
    n_genes: int,
    n_groups: int,
    *,
    de_prob: float = 0.1,
    seed: int = 0,
    log_mean: float = LOG_MEAN,
    depth_sd: float = DEPTH_SD,
    chunk_size: int | None = None,
    storage_options: StorageOptions = None,
) -> None:
    """Write simulated counts one row chunk at a time, never holding the whole matrix.

    ``store`` ending in ``.h5`` gets a local Cell Ranger v3 HDF5 file (:func:`~recall_dask.io.
    write_10x_h5`), anything else an AnnData Zarr store (a path or a URL opened with
    ``storage_options``) with the true group in ``obs['group']``. A 10x file has no place for
    the groups: its barcodes are ``cell{i}``, so the group of cell ``i`` is
    ``group_labels(n_cells, n_groups)[i]``. The counts, cell and gene names equal those of
    :func:`simulate`.
    """
    means, obs, var = _design(n_cells, n_genes, n_groups, de_prob, seed, log_mean, depth_sd)

    def rows(size: int) -> Iterator[sp.csr_matrix]:
        starts = range(0, n_cells, size)
        calls = [(first, min(size, n_cells - first), means, seed, depth_sd) for first in starts]
        return _prefetched(simulate_block, calls)

    if Path(store).suffix.lower() == ".h5":
        write_10x_h5(store, obs, var, rows, chunk_size=chunk_size)
    else:
        write_stream(store, obs, var, rows, chunk_size=chunk_size, storage_options=storage_options)


def _prefetched(function: Callable[..., _T], calls: list[tuple]) -> Iterator[_T]:
    """``function(*args)`` for each ``args`` of ``calls``, in order, computed ahead in threads.

    At most ``_THREADS + 1`` results are pending at a time, which bounds the memory; the
    kernels release the GIL, so the threads run in parallel with the consumer's writes.
    """
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        pending: deque[Future[_T]] = deque()
        for args in calls:
            pending.append(pool.submit(function, *args))
            if len(pending) > _THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _design(
    n_cells: int,
    n_genes: int,
    n_groups: int,
    de_prob: float,
    seed: int,
    log_mean: float,
    depth_sd: float,
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Checked sizes, the group means, and obs (with the true group) and var."""
    for name, value in (("cells", n_cells), ("genes", n_genes), ("groups", n_groups)):
        if value < 1:
            raise InputError(f"--{name} must be >= 1 (got {value})")
    if not 0 <= de_prob <= 1:
        raise InputError(f"--de-prob must be in [0, 1] (got {de_prob})")
    if not depth_sd >= 0:
        raise InputError(f"--depth-sd must be >= 0 (got {depth_sd})")
    obs = pd.DataFrame(
        {"group": pd.Categorical(group_labels(n_cells, n_groups).astype(str))},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    return group_means(n_genes, n_groups, de_prob, seed, log_mean), obs, var
