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

**Batches** (:class:`Layout`, ``n_batches > 1``): cell i is in batch ``i % n_batches``; in
each batch a fraction ``batch_effect`` of the genes has its own fold change, drawn as the
groups' are, so one group's cells differ between batches in those genes; each batch's size
factors are multiplied by its depth (``batch_depth``); and each batch holds the groups in the
proportions of its row of ``composition`` (a zero: the group is absent from that batch),
spread evenly over the batch's cells. The group means are those of the same simulation
without batches.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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
        means *= _fold_changes(rng, n_groups, n_genes, de_prob)
    return means


def _fold_changes(
    rng: np.random.Generator, n_rows: int, n_genes: int, fraction: float
) -> np.ndarray:
    """Fold changes (rows x genes): in each row, a fraction of the genes up or down by a
    log-normal factor (median e), the others 1."""
    changed = rng.random((n_rows, n_genes)) < fraction
    fold = rng.lognormal(mean=1.0, sigma=0.4, size=(n_rows, n_genes))
    direction = np.where(rng.random((n_rows, n_genes)) < 0.5, 1.0, -1.0)
    return np.where(changed, fold**direction, 1.0)


def group_labels(n_cells: int, n_groups: int) -> np.ndarray:
    """Balanced group of each cell, interleaved so every row range holds every group."""
    return np.arange(n_cells) % n_groups


#: The golden ratio's fractional part: k * _SPREAD mod 1 spreads any run of k evenly.
_SPREAD = (np.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True, eq=False)
class Layout:
    """Which group and batch each cell is in, and its batch's depth, from its index alone.

    Without batches, cell i is in group ``i % n_groups`` (:func:`group_labels`). With
    ``n_batches > 1``, cell i is in batch ``i % n_batches`` and, as the k-th cell of its
    batch, in the group where the batch's cumulative ``composition`` (batches x groups
    weights; default equal) first exceeds ``k * golden ratio mod 1``: every row range then
    holds the groups of every batch in about their proportions.
    """

    n_groups: int
    n_batches: int = 1
    batch_depth: np.ndarray | None = None
    composition: np.ndarray | None = None

    def groups(self, cells: np.ndarray) -> np.ndarray:
        """Each of the absolute cell indices ``cells``: its group."""
        if self.n_batches == 1 and self.composition is None:
            return cells % self.n_groups
        weights = (
            np.ones((self.n_batches, self.n_groups))
            if self.composition is None
            else np.asarray(self.composition, dtype=np.float64)
        )
        cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
        spread = ((cells // self.n_batches) * _SPREAD) % 1.0
        group = np.empty(cells.size, dtype=np.int64)
        for batch in range(self.n_batches):
            members = self.batches(cells) == batch
            group[members] = np.searchsorted(cumulative[batch], spread[members], side="right")
        return np.minimum(group, self.n_groups - 1)

    def batches(self, cells: np.ndarray) -> np.ndarray:
        """Each of the absolute cell indices ``cells``: its batch, ``i % n_batches``."""
        return cells % self.n_batches

    def kinds(self, cells: np.ndarray) -> np.ndarray:
        """Each cell's row in the means: its group's, in its batch."""
        return self.groups(cells) * self.n_batches + self.batches(cells)

    def depth(self, cells: np.ndarray) -> np.ndarray:
        """Each cell's batch depth (1 without batches)."""
        if self.batch_depth is None:
            return np.ones(cells.size)
        return np.asarray(self.batch_depth, dtype=np.float64)[self.batches(cells)]


def batch_means(means: np.ndarray, n_batches: int, batch_effect: float, seed: int) -> np.ndarray:
    """The group means in every batch (groups x batches rows, group-major): each batch's own
    fold changes on a fraction ``batch_effect`` of the genes, from a stream of their own."""
    if n_batches == 1:
        return means
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, 2]))
    folds = _fold_changes(rng, n_batches, means.shape[1], batch_effect)
    return (means[:, None, :] * folds[None, :, :]).reshape(-1, means.shape[1])


def _simulate_rng_block(
    block: int, means: np.ndarray, seed: int, depth_sd: float, layout: Layout
) -> sp.csr_matrix:
    """The counts of the 1,024 cells of RNG block ``block`` as CSR float32."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, 1, block]))
    cells = np.arange(block * _BLOCK_ROWS, (block + 1) * _BLOCK_ROWS)
    kinds = layout.kinds(cells)
    size_factors = rng.lognormal(mean=0.0, sigma=depth_sd, size=_BLOCK_ROWS)
    if layout.batch_depth is not None:
        size_factors *= layout.depth(cells)
    n_genes = means.shape[1]
    batch = max(1, min(_BLOCK_ROWS, _BATCH_ENTRIES // n_genes))
    indptrs, indices, data = [np.zeros(1, dtype=np.int64)], [], []
    for start in range(0, _BLOCK_ROWS, batch):
        stop = min(start + batch, _BLOCK_ROWS)
        uniforms = rng.random((stop - start, n_genes))
        ptr, idx, val = _nb_csr_rows(
            means, kinds[start:stop], size_factors[start:stop], uniforms, _SIZE
        )
        indptrs.append(ptr[1:] + indptrs[-1][-1])
        indices.append(idx)
        data.append(val)
    parts = (np.concatenate(data), np.concatenate(indices), np.concatenate(indptrs))
    return sp.csr_matrix(parts, shape=(_BLOCK_ROWS, n_genes))


def simulate_block(
    first_row: int,
    n_rows: int,
    means: np.ndarray,
    seed: int,
    depth_sd: float = DEPTH_SD,
    layout: Layout | None = None,
) -> sp.csr_matrix:
    """Counts of cells ``first_row .. first_row + n_rows - 1`` as CSR float32; ``means`` has a
    row per group (or per group and batch, as ``layout`` reads it)."""
    layout = Layout(means.shape[0]) if layout is None else layout
    first_block, last_block = first_row // _BLOCK_ROWS, (first_row + n_rows - 1) // _BLOCK_ROWS
    blocks = range(first_block, last_block + 1)
    pieces = [_simulate_rng_block(b, means, seed, depth_sd, layout) for b in blocks]
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
    batches: int = 1,
    batch_effect: float = 0.1,
    batch_depth: Sequence[float] | None = None,
    composition: np.ndarray | None = None,
) -> ad.AnnData:
    """An in-memory AnnData of simulated counts with the true group in ``obs['group']`` (and
    with ``batches`` above 1 the batch in ``obs['batch']``; see :class:`Layout`)."""
    means, layout, obs, var = _design(
        n_cells,
        n_genes,
        n_groups,
        de_prob,
        seed,
        log_mean,
        depth_sd,
        batches,
        batch_effect,
        batch_depth,
        composition,
    )
    counts = simulate_block(0, n_cells, means, seed, depth_sd, layout)
    return ad.AnnData(X=counts, obs=obs, var=var)


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
    batches: int = 1,
    batch_effect: float = 0.1,
    batch_depth: Sequence[float] | None = None,
    composition: np.ndarray | None = None,
    chunk_size: int | None = None,
    storage_options: StorageOptions = None,
) -> None:
    """Write simulated counts one row chunk at a time, never holding the whole matrix.

    ``store`` ending in ``.h5`` gets a local Cell Ranger v3 HDF5 file (:func:`~recall_dask.io.
    write_10x_h5`), anything else an AnnData Zarr store (a path or a URL opened with
    ``storage_options``) with the true group in ``obs['group']`` (and the batch in
    ``obs['batch']``). A 10x file has no place for them: its barcodes are ``cell{i}``, so the
    group of cell ``i`` is ``group_labels(n_cells, n_groups)[i]`` without batches (with
    batches, :class:`Layout` gives both). The counts, cell and gene names equal those of
    :func:`simulate`.
    """
    means, layout, obs, var = _design(
        n_cells,
        n_genes,
        n_groups,
        de_prob,
        seed,
        log_mean,
        depth_sd,
        batches,
        batch_effect,
        batch_depth,
        composition,
    )

    def rows(size: int) -> Iterator[sp.csr_matrix]:
        starts = range(0, n_cells, size)
        calls = [
            (first, min(size, n_cells - first), means, seed, depth_sd, layout) for first in starts
        ]
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
    batches: int,
    batch_effect: float,
    batch_depth: Sequence[float] | None,
    composition: np.ndarray | None,
) -> tuple[np.ndarray, Layout, pd.DataFrame, pd.DataFrame]:
    """Checked sizes, the means (a row per group, or per group and batch), the layout, and
    obs (with the true group, and the batch) and var."""
    for name, value in (
        ("cells", n_cells),
        ("genes", n_genes),
        ("groups", n_groups),
        ("batches", batches),
    ):
        if value < 1:
            raise InputError(f"--{name} must be >= 1 (got {value})")
    for name, value in (("de-prob", de_prob), ("batch-effect", batch_effect)):
        if not 0 <= value <= 1:
            raise InputError(f"--{name} must be in [0, 1] (got {value})")
    if not depth_sd >= 0:
        raise InputError(f"--depth-sd must be >= 0 (got {depth_sd})")
    if batch_depth is not None:
        batch_depth = np.asarray(batch_depth, dtype=np.float64)
        if batch_depth.shape != (batches,) or not (batch_depth > 0).all():
            raise InputError(
                f"--batch-depth needs one positive factor per batch ({batches}), got "
                f"{batch_depth.tolist()}"
            )
    if composition is not None:
        composition = np.asarray(composition, dtype=np.float64)
        if composition.shape != (batches, n_groups) or (composition < 0).any():
            raise InputError(f"the composition must be {batches} x {n_groups} non-negative weights")
        if not (composition.sum(axis=1) > 0).all():
            raise InputError("every batch must hold some group")
    layout = Layout(n_groups, batches, batch_depth, composition)
    cells = np.arange(n_cells)
    columns = {"group": pd.Categorical(layout.groups(cells).astype(str))}
    if batches > 1:
        columns["batch"] = pd.Categorical(layout.batches(cells).astype(str))
    obs = pd.DataFrame(columns, index=[f"cell{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    means = group_means(n_genes, n_groups, de_prob, seed, log_mean)
    return batch_means(means, batches, batch_effect, seed), layout, obs, var
