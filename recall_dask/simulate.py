"""Simulated counts with known groups, for tests and benchmarks.

Negative binomial counts (gamma-Poisson): each gene has a base mean drawn from a log-normal;
in each group a fraction ``de_prob`` of genes is differentially expressed by a log-normal fold
change up or down; each cell has a log-normal library size factor. Rows are generated in
fixed blocks keyed by (seed, block), so any row range can be produced on its own.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

_BLOCK_ROWS = 4096
_STREAM = 0x73696D  # "sim"
_DISPERSION = 0.2  # NB variance = mu + 0.2 mu^2, a typical UMI overdispersion


def group_means(n_genes: int, n_groups: int, de_prob: float, seed: int) -> np.ndarray:
    """Mean expression (groups x genes) before library-size scaling."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, 0]))
    base = rng.lognormal(mean=-1.0, sigma=1.5, size=n_genes)
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
    n_cells: int, n_genes: int, n_groups: int, *, de_prob: float = 0.1, seed: int = 0
) -> ad.AnnData:
    """An in-memory AnnData of simulated counts with the true group in ``obs['group']``."""
    means = group_means(n_genes, n_groups, de_prob, seed)
    counts = simulate_block(0, n_cells, means, seed)
    obs = pd.DataFrame(
        {"group": pd.Categorical(group_labels(n_cells, n_groups).astype(str))},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    return ad.AnnData(X=counts, obs=obs, var=var)
