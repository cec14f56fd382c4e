"""Simulated counts with known groups, for tests and benchmarks.

Negative binomial counts (gamma-Poisson): each gene has a base mean drawn from a log-normal;
in each group a fraction ``de_prob`` of genes is differentially expressed by a log-normal fold
change up or down; each cell has a log-normal library size factor. Rows are generated in
fixed blocks keyed by (seed, block), so any row range can be produced on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recall_dask.errors import InputError
from recall_dask.io import DEFAULT_CHUNK_SIZE, write_stream

_BLOCK_ROWS = 1024  # divides the default chunk size, so no block is drawn twice
_STREAM = 0x73696D  # "sim"
_DISPERSION = 0.2  # NB variance = mu + 0.2 mu^2, a typical UMI overdispersion
#: Mean of log base expression: with sigma 2.3, about 5% of entries are nonzero and a cell
#: has about 2,400 UMIs over 20,000 genes, like 10x data. Higher values give denser data.
LOG_MEAN = -5.0


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


def simulate_block(first_row: int, n_rows: int, means: np.ndarray, seed: int) -> sp.csr_matrix:
    """Counts of cells ``first_row .. first_row + n_rows - 1`` as CSR float32."""
    n_groups = means.shape[0]
    first_block, last_block = first_row // _BLOCK_ROWS, (first_row + n_rows - 1) // _BLOCK_ROWS
    pieces = []
    for block in range(first_block, last_block + 1):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, 1, block]))
        rows = np.arange(block * _BLOCK_ROWS, (block + 1) * _BLOCK_ROWS)
        size = rng.lognormal(mean=0.0, sigma=0.3, size=rows.size)
        mu = means[rows % n_groups] * size[:, None]
        rate = rng.gamma(1 / _DISPERSION, mu * _DISPERSION)
        pieces.append(sp.csr_matrix(rng.poisson(rate).astype(np.float32)))
    stacked = sp.vstack(pieces, format="csr")
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
) -> ad.AnnData:
    """An in-memory AnnData of simulated counts with the true group in ``obs['group']``."""
    means, obs, var = _design(n_cells, n_genes, n_groups, de_prob, seed, log_mean)
    return ad.AnnData(X=simulate_block(0, n_cells, means, seed), obs=obs, var=var)


def write_simulated(
    store: str | Path,
    n_cells: int,
    n_genes: int,
    n_groups: int,
    *,
    de_prob: float = 0.1,
    seed: int = 0,
    log_mean: float = LOG_MEAN,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Write simulated counts straight to an AnnData Zarr store, one row chunk at a time.

    The matrix is never in memory as a whole; the result equals :func:`simulate`.
    """
    means, obs, var = _design(n_cells, n_genes, n_groups, de_prob, seed, log_mean)

    def rows(size: int) -> Iterator[sp.csr_matrix]:
        for first in range(0, n_cells, size):
            yield simulate_block(first, min(size, n_cells - first), means, seed)

    write_stream(store, obs, var, rows, chunk_size=chunk_size)


def _design(
    n_cells: int, n_genes: int, n_groups: int, de_prob: float, seed: int, log_mean: float
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Checked sizes, the group means, and obs (with the true group) and var."""
    for name, value in (("cells", n_cells), ("genes", n_genes), ("groups", n_groups)):
        if value < 1:
            raise InputError(f"--{name} must be >= 1 (got {value})")
    if not 0 <= de_prob <= 1:
        raise InputError(f"--de-prob must be in [0, 1] (got {de_prob})")
    obs = pd.DataFrame(
        {"group": pd.Categorical(group_labels(n_cells, n_groups).astype(str))},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    return group_means(n_genes, n_groups, de_prob, seed, log_mean), obs, var
