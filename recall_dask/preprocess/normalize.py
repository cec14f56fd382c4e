"""Normalization, as Seurat's ``NormalizeData`` (LogNormalize): library size 1e4, then log1p.

recall normalizes the augmented matrix [variable genes | artificial genes], drawing the
artificial genes on the workers block by block (:func:`augmented_log_normalized`); the
standard clustering and count splitting normalize the variable genes of the counts alone.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import scipy.sparse as sp

from recall_dask._chunks import map_row_blocks
from recall_dask.nulls import NullModel


def log_normalize(
    block: sp.csr_matrix, target_sum: float, columns: np.ndarray | None = None
) -> sp.csr_matrix:
    """Seurat's LogNormalize of a row block: ``log1p(x / library size * target_sum)``, float64.

    The library size of a cell is its total over all columns of ``block``; with ``columns``,
    only those columns are returned (normalized by the full library size). The operations come
    in Seurat's order (``LogNorm``: divide, then scale), so values that tie in R tie here too,
    and the rank-sum tests see the same ties.
    """
    block = sp.csr_matrix(block, dtype=np.float64)
    library_size = np.asarray(block.sum(axis=1)).ravel()
    block = block.copy() if columns is None else block[:, columns]  # never scale the input
    block.data /= np.repeat(library_size, np.diff(block.indptr))  # stored values: size > 0
    block.data *= target_sum
    np.log1p(block.data, out=block.data)
    block.eliminate_zeros()
    return block


def _augment_block(
    block: sp.csr_matrix,
    first_row: int,
    genes: np.ndarray,
    null: NullModel,
    seed: int,
    target_sum: float,
) -> sp.csr_matrix:
    """[variable genes | artificial genes] of one row block, log-normalized (LogNormalize)."""
    real = sp.csr_matrix(block[:, genes], dtype=np.float64)
    artificial = null.sample(first_row, block.shape[0], seed)
    augmented = sp.hstack([real, artificial], format="csr", dtype=np.float64)
    return log_normalize(augmented, target_sum)


def _normalize_block(
    block: sp.csr_matrix, first_row: int, genes: np.ndarray, target_sum: float
) -> sp.csr_matrix:
    return log_normalize(block, target_sum, genes)


def log_normalized(counts: da.Array, genes: np.ndarray, target_sum: float = 1e4) -> da.Array:
    """Lazy (cells, genes) log-normalized matrix of the ``genes`` columns, as Seurat's
    ``NormalizeData`` on all genes followed by a subset to the variable genes: the standard
    clustering without artificial genes."""
    return map_row_blocks(counts, _normalize_block, genes.size, genes, target_sum)


def augmented_log_normalized(
    counts: da.Array, genes: np.ndarray, null: NullModel, seed: int, target_sum: float = 1e4
) -> da.Array:
    """Lazy (cells, 2p) log-normalized matrix of the variable genes and their artificial twins.

    Artificial counts are drawn on the workers, block by block, keyed by absolute cell index,
    so the result does not depend on chunking or on the number of workers.
    """
    return map_row_blocks(counts, _augment_block, 2 * genes.size, genes, null, seed, target_sum)
