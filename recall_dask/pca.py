"""Exact PCA of the scaled augmented matrix from a streamed Gram matrix.

Seurat's ``RunPCA`` takes the truncated SVD of the scaled data without centring it again
(the clipping at 10 leaves it slightly off-centre), and returns cell embeddings U * S. The
same subspace comes exactly from the eigenvectors of the features x features Gram matrix
Z^T Z, which is summed over row blocks in float64 and never needs the dense N x 2p Z.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

from recall_dask._chunks import map_row_blocks, sum_row_blocks
from recall_dask.preprocess import clip_excess


@dataclass(frozen=True)
class PCA:
    """Feature loadings (features x PCs) and singular values of the scaled data."""

    loadings: np.ndarray
    singular_values: np.ndarray


def _scaled_gram(
    block: sp.csr_matrix, mean: np.ndarray, inv_std: np.ndarray, scale_max: float
) -> np.ndarray:
    """Z^T Z of one block, Z = (X - mean) * inv_std - E with E the sparse clip excess.

    Expanding the products keeps every term sparse: X^T X, the column sums of X and of E,
    and the sparse cross products with E.
    """
    n_rows = block.shape[0]
    excess = clip_excess(block, mean, inv_std, scale_max)
    col_sum = np.asarray(block.sum(axis=0)).ravel()
    centred = (block.T @ block).toarray()
    centred -= np.outer(mean, col_sum) + np.outer(col_sum, mean) - n_rows * np.outer(mean, mean)
    gram = centred * np.outer(inv_std, inv_std)
    if excess.nnz:
        excess_sum = np.asarray(excess.sum(axis=0)).ravel()
        cross = inv_std[:, None] * (block.T @ excess).toarray()
        cross -= np.outer(inv_std * mean, excess_sum)
        gram -= cross + cross.T
        gram += (excess.T @ excess).toarray()
    return gram


def scaled_gram(
    data: da.Array, mean: np.ndarray, inv_std: np.ndarray, scale_max: float
) -> da.Array:
    """Lazy features x features Gram matrix of the scaled, clipped data."""
    n = data.shape[1]
    return sum_row_blocks(data, _scaled_gram, (n, n), mean, inv_std, scale_max)


def pca_from_gram(gram: np.ndarray, n_pcs: int) -> PCA:
    """Top ``n_pcs`` eigenvectors of the Gram matrix, signs fixed for reproducibility.

    Each component is oriented so that its largest-magnitude loading is positive, which makes
    the embedding independent of LAPACK's arbitrary sign choice.
    """
    n = gram.shape[0]
    n_pcs = min(n_pcs, n)
    if n_pcs < n - 1:  # Lanczos to machine precision; the fixed start vector keeps it repeatable
        eigenvalues, vectors = eigsh(gram, k=n_pcs, which="LA", v0=np.ones(n), tol=0)
    else:
        eigenvalues, vectors = scipy.linalg.eigh(gram, subset_by_index=[n - n_pcs, n - 1])
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    return PCA(vectors * signs, np.sqrt(np.maximum(eigenvalues, 0.0)))


def _project(
    block: sp.csr_matrix,
    first_row: int,
    mean: np.ndarray,
    inv_std: np.ndarray,
    scale_max: float,
    loadings: np.ndarray,
) -> np.ndarray:
    """Z V of one block, kept sparse as in ``_scaled_gram``."""
    weighted = inv_std[:, None] * loadings
    embedding = block @ weighted - (mean @ weighted)[None, :]
    return embedding - clip_excess(block, mean, inv_std, scale_max) @ loadings


def cell_embeddings(
    data: da.Array, mean: np.ndarray, inv_std: np.ndarray, scale_max: float, pca: PCA
) -> da.Array:
    """Lazy cells x PCs embedding, U * S as Seurat's ``Embeddings(obj, 'pca')``."""
    return map_row_blocks(
        data,
        _project,
        pca.loadings.shape[1],
        mean,
        inv_std,
        scale_max,
        pca.loadings,
        meta=np.empty((0, 0)),
    )
