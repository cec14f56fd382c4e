"""Scaling, as Seurat's ``ScaleData``: mean 0 and variance 1 per feature, clipped at 10.

One streaming pass of per-column sums (:func:`column_moments`) serves both the genes (for
variable-gene selection) and the normalized features (for scaling); with batches, the same
pass sums each batch's cells apart (:func:`batch_moments`).
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
import scipy.sparse as sp

from recall_dask import config
from recall_dask._chunks import sum_row_blocks
from recall_dask.progress import compute


def _column_moments(block: sp.csr_matrix) -> np.ndarray:
    """Per-column sum, sum of squares and number of nonzero cells of one row block."""
    block = sp.csr_matrix(block, dtype=np.float64)
    squared = block.multiply(block)
    nonzero = block.astype(bool)
    return np.vstack(
        [
            np.asarray(block.sum(axis=0)).ravel(),
            np.asarray(squared.sum(axis=0)).ravel(),
            np.asarray(nonzero.sum(axis=0)).ravel(),
        ]
    )


def batch_column_sums(
    batch: np.ndarray, columns: np.ndarray, weights: tuple[np.ndarray, ...], shape: tuple[int, int]
) -> np.ndarray:
    """Sums of each of ``weights`` (one value per stored entry) per batch and column, for
    entries in batch ``batch`` and column ``columns``: batches x len(weights) x columns."""
    n_batches, n_cols = shape
    flat = batch * n_cols + columns
    return np.stack(
        [
            np.bincount(flat, weights=w, minlength=n_batches * n_cols).reshape(shape)
            for w in weights
        ],
        axis=1,
    )


def _batch_moments(
    blocks: list[tuple[sp.csr_matrix, int]], codes: np.ndarray, n_batches: int
) -> np.ndarray:
    """Per-batch column sums, sums of squares and nonzero counts of row blocks given with
    their first rows: batches x 3 x columns."""
    n_cols = blocks[0][0].shape[1]
    total = np.zeros((n_batches, 3, n_cols))
    for block, first_row in blocks:
        block = sp.csr_matrix(block, dtype=np.float64)
        rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        moments = (block.data, block.data**2, block.data != 0)
        sums = batch_column_sums(codes[first_row + rows], block.indices, moments, total.shape[::2])
        total += sums
    return total


def batch_moments(array: da.Array, codes: np.ndarray, n_batches: int) -> da.Array:
    """Lazy (batches, 3, columns) array: :func:`column_moments` of each batch's cells
    (``codes[i]`` the batch of row i), in one pass; their sum over batches is
    :func:`column_moments`."""
    return sum_row_blocks(
        array,
        _batch_moments,
        (n_batches, 3, array.shape[1]),
        np.asarray(codes, dtype=np.int64),
        n_batches,
        batch=config.get("split-every"),
        first_rows=True,
    )


def column_moments(array: da.Array) -> da.Array:
    """Lazy (3, columns) array: per-column sum, sum of squares and nonzero count over all cells.

    One pass serves both the genes (variable-gene selection) and the augmented features
    (scaling).
    """
    return sum_row_blocks(array, _column_moments, (3, array.shape[1]))


def mean_and_variance(total: np.ndarray, total_sq: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Mean and variance with the n - 1 denominator (R's ``var``), from column sums."""
    mean = total / n
    return mean, np.maximum(total_sq - n * mean**2, 0.0) / (n - 1)


@dataclass(frozen=True)
class Scaling:
    """Seurat's ``ScaleData``: z = (x - mean) / sd per feature, clipped above at ``scale_max``.

    Constant features (sd = 0) scale to 0. Because only values above ``mean + scale_max * sd``
    clip, clipping is a cap on the stored (nonzero) values in expression space: the scaled
    matrix is exactly ``(capped X - mean) / sd``, which keeps every pass sparse.
    """

    mean: np.ndarray
    std: np.ndarray
    scale_max: float

    @property
    def inv_std(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.where(self.std > 0, 1.0 / self.std, 0.0)

    @property
    def cap(self) -> np.ndarray:
        return self.mean + self.scale_max * self.std

    def capped(self, block: sp.csr_matrix) -> sp.csr_matrix:
        """``block`` with every value above its feature's cap set to the cap: new values,
        but the block's own ``indices`` and ``indptr``, which must not be modified."""
        data = np.minimum(block.data, self.cap[block.indices])
        return sp.csr_matrix((data, block.indices, block.indptr), shape=block.shape)


def feature_scaling(data: da.Array, scale_max: float = 10.0) -> Scaling:
    """Per-feature mean and standard deviation (n - 1) over all cells, in one pass."""
    ((total, total_sq, _),) = compute(column_moments(data))
    mean, variance = mean_and_variance(total, total_sq, data.shape[0])
    return Scaling(mean, np.sqrt(variance), scale_max)
