"""Numba kernels of the Gram matrix, free of dask: the sparse X^T X of a row block, and the
centring and scaling applied once to the summed result (:mod:`recall_dask.pca.exact`)."""

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def accumulate_gram(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, out: np.ndarray, block: int
) -> None:
    """Add X^T X of a CSR block with sorted column indices to the upper triangle of ``out``.

    Each row adds the products of its nonzero pairs only, so the cost is the sum of squared
    row counts, not rows x features^2. The products are added one ``block`` x ``block`` tile
    of ``out`` at a time, over all rows, so the tile being written stays in cache.
    """
    n_rows = indptr.size - 1
    n_tiles = (out.shape[1] + block - 1) // block
    starts = np.empty((n_rows, n_tiles + 1), np.int64)  # first entry of each tile, per row
    for row in range(n_rows):
        position = indptr[row]
        for tile in range(n_tiles):
            while position < indptr[row + 1] and indices[position] < tile * block:
                position += 1
            starts[row, tile] = position
        starts[row, n_tiles] = indptr[row + 1]
    for tile_a in range(n_tiles):
        for tile_b in range(tile_a, n_tiles):
            for row in range(n_rows):
                stop_b = starts[row, tile_b + 1]
                for a in range(starts[row, tile_a], starts[row, tile_a + 1]):
                    feature_a, value_a = indices[a], data[a]
                    start_b = a if tile_a == tile_b else starts[row, tile_b]
                    for b in range(start_b, stop_b):
                        out[feature_a, indices[b]] += value_a * data[b]


@numba.njit(nogil=True, cache=True)
def centre_and_scale_gram(
    upper: np.ndarray, col_sum: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, n_rows: float
) -> np.ndarray:
    """Full symmetric (X - 1 mean^T)^T (X - 1 mean^T) scaled by inv_std on both sides.

    ``upper`` holds the upper triangle of X^T X and ``col_sum`` the column sums of X.
    """
    n = col_sum.size
    gram = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            centred = (
                upper[i, j]
                - mean[i] * col_sum[j]
                - col_sum[i] * mean[j]
                + n_rows * mean[i] * mean[j]
            )
            gram[i, j] = gram[j, i] = centred * inv_std[i] * inv_std[j]
    return gram
