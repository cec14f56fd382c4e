"""Each cell's sequencing depth: its library size (total count over all genes, Seurat's
``nCount_RNA``), its count outside the variable genes, its size factor relative to the mean
cell, and groups of cells of like depth.

The depth-aware calibration (``--depth cell``) uses them: recall draws each cell's artificial
genes with its size factor (:mod:`recall_dask.nulls.depth`), and count splitting compares
clusters within groups of cells of like depth (:mod:`recall_dask.methods.countsplit`).

recall takes a cell's depth from the genes that are not its variable genes. A library size
mixes the technical depth, which scales every gene of the cell, with the cell's composition:
a cell type whose few variable genes are very high (immunoglobulins in plasma cells) has a
large library without being sequenced deeper, and twins scaled by it would carry that
composition as if it were depth. The other genes carry the depth and little of the cell type.
"""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import scipy.sparse as sp

from recall_dask._chunks import rows_only
from recall_dask.progress import compute

logger = logging.getLogger(__name__)

#: Below this fraction of counts outside the variable genes, a cell's depth is mostly theirs.
_FEW_OUTSIDE = 0.1
#: Groups of cells of like depth for stratified pair tests: 20 quantile groups of library size
#: (ten let a split of deep from shallow cells through at the edges of the groups).
DEPTH_STRATA = 20


def _row_totals(block) -> np.ndarray:
    return np.asarray(sp.csr_matrix(block).sum(axis=1, dtype=np.float64)).ravel()


def library_sizes(counts: da.Array) -> da.Array:
    """Lazy total count of each cell over all genes (cells,), from row-chunked counts."""
    counts = rows_only(counts)
    return counts.map_blocks(_row_totals, drop_axis=1, dtype=np.float64, meta=np.empty(0))


def depth_outside(counts: da.Array, genes: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Each cell's count over the genes that are not ``genes``, from its library size
    ``totals`` and one streaming pass over ``genes``. A cell with counts only in ``genes`` is
    given its library size times the fraction of all counts outside them; if there is no
    other gene, the library sizes themselves."""
    (inside,) = compute(library_sizes(counts[:, genes]))
    outside = totals - inside
    fraction = outside.sum() / totals.sum()
    if fraction < _FEW_OUTSIDE:
        logger.warning(
            "%.0f%% of the counts lie outside the %d variable genes: each cell's depth is then "
            "taken from the variable genes themselves, and their own noise in it can let "
            "recall split a population by depth; choose fewer --n-hvg than genes",
            100 * fraction,
            genes.size,
        )
    if outside.sum() <= 0:
        return totals
    return np.where((outside <= 0) & (totals > 0), totals * fraction, outside)


def size_factors(library_sizes: np.ndarray) -> np.ndarray:
    """Each cell's library size over the mean library size (mean 1; 0 for an empty cell)."""
    library_sizes = np.asarray(library_sizes, dtype=np.float64)
    return library_sizes / library_sizes.mean()


def depth_strata(library_sizes: np.ndarray, n_strata: int = DEPTH_STRATA) -> np.ndarray:
    """Each cell's group of like depth, ``0..n_strata - 1``: the quantile group of its library
    size, cells of equal library size always together (so fewer groups where many tie)."""
    library_sizes = np.asarray(library_sizes, dtype=np.float64)
    inner = np.quantile(library_sizes, np.arange(1, n_strata) / n_strata)
    _, strata = np.unique(np.searchsorted(inner, library_sizes, side="right"), return_inverse=True)
    return strata.astype(np.int64)
