"""Exact PCA of the scaled augmented matrix from a streamed Gram matrix.

Seurat's ``RunPCA`` takes the truncated SVD of the scaled data without centring it again
(the clipping at 10 leaves it slightly off-centre), and returns cell embeddings U * S. The
same subspace comes exactly from the eigenvectors of the features x features Gram matrix
Z^T Z. With Z = (capped X - mean) / sd, Z^T Z expands into the sparse product of the capped
matrix with itself and its column sums, both summed over row blocks in float64; the centring
and scaling are applied once at the end, so the dense N x 2p Z is never formed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.linalg.blas import dsymv as symv
from scipy.linalg.blas import dsyrk as syrk
from scipy.sparse.linalg import LinearOperator, eigsh

from recall_dask import config
from recall_dask._chunks import map_row_blocks, sum_row_blocks
from recall_dask.pca._kernels import accumulate_gram, centre_and_scale_gram
from recall_dask.preprocess.scale import Scaling
from recall_dask.progress import compute


@dataclass(frozen=True)
class PCA:
    """Feature loadings (features x PCs) and singular values of the scaled data."""

    loadings: np.ndarray
    singular_values: np.ndarray


#: Features per cache-resident tile of the Gram matrix while it accumulates (512 KiB).
_GRAM_TILE = 256


def _dense_is_faster(block: sp.csr_matrix, dense_ratio: float) -> bool:
    """Whether BLAS on the densified block beats the sparse products: the sparse kernel costs
    about the sum of squared row counts, BLAS rows x features^2 at a far higher rate, so BLAS
    wins above ``dense_ratio`` (the ``recall.dense-gram-ratio`` knob) x features^2."""
    row_counts = np.diff(block.indptr).astype(np.float64)
    return float(np.mean(row_counts**2)) > dense_ratio * block.shape[1] ** 2


def _gram_partial(blocks: list[sp.csr_matrix], scaling: Scaling, dense_ratio: float) -> np.ndarray:
    """Upper triangle of C^T C (rows 0..F-1) and column sums of C (row F), C = capped blocks."""
    n = blocks[0].shape[1]
    partial = np.zeros((n + 1, n))
    upper = partial[:n]
    for block in blocks:
        capped = scaling.capped(block)
        if _dense_is_faster(capped, dense_ratio):
            # C^T C by BLAS: upper.T is the Fortran-ordered view whose lower triangle is
            # upper's upper triangle, and dense.T the features x rows matrix syrk multiplies.
            dense = capped.toarray().astype(np.float64, copy=False)
            syrk(1.0, dense.T, c=upper.T, beta=1.0, trans=0, lower=1, overwrite_c=1)
        else:
            if not capped.has_sorted_indices:  # a sorted copy: capped shares block's indices
                capped = capped.sorted_indices()
            data = capped.data.astype(np.float64)
            accumulate_gram(capped.indptr, capped.indices, data, upper, _GRAM_TILE)
        partial[n] += np.asarray(capped.sum(axis=0)).ravel()
    return partial


def _gram_partials(data: da.Array, scaling: Scaling) -> da.Array:
    """Lazy sum over row blocks of :func:`_gram_partial`: C^T C's upper triangle and C's
    column sums, (features + 1) x features.

    Each partial accumulates its share of row blocks in place, so few features x features
    partials (128 MB at 4,000 features) are shipped and added, and the tasks still spread out:
    one per ``recall.cells-per-gram-partial`` cells, at most ``recall.gram-partials``.
    """
    n_cells, n = data.shape
    per_partial = config.get("cells-per-gram-partial")
    n_partials = min(config.get("gram-partials"), -(-n_cells // per_partial))
    batch = -(-len(data.chunks[0]) // n_partials)
    ratio = config.get("dense-gram-ratio")
    return sum_row_blocks(data, _gram_partial, (n + 1, n), scaling, ratio, batch=batch)


def _gram_from_partials(partial: np.ndarray, scaling: Scaling, n_cells: int) -> np.ndarray:
    # Arrays deserialized from another process may be unaligned: BLAS is then ten times slower.
    partial = np.require(partial, requirements=["C", "A"])
    n = partial.shape[1]
    return centre_and_scale_gram(
        partial[:n], partial[n], scaling.mean, scaling.inv_std, float(n_cells)
    )


def scaled_gram(data: da.Array, scaling: Scaling) -> np.ndarray:
    """Features x features Gram matrix Z^T Z of the scaled, clipped data."""
    (partial,) = compute(_gram_partials(data, scaling))
    return _gram_from_partials(partial, scaling, data.shape[0])


def principal_components(data: da.Array, scaling: Scaling, n_pcs: int) -> PCA:
    """The exact PCA of the scaled, clipped data, computed where its Gram matrix is summed.

    On a distributed cluster the Gram matrix (128 MB at 4,000 features) stays on the worker
    that sums it, which also finds its eigenvectors; only the loadings come back, and the
    eigensolver does not hold the client's GIL (ARPACK holds it between its products).

    Draws prepared side by side take turns here (:data:`_GRAM_PASS`), so that their Gram
    passes do not hold memory at the same time.
    """
    task = dask.delayed(_pca_of_partials, pure=True)
    with _GRAM_PASS:
        (pca,) = compute(task(_gram_partials(data, scaling), scaling, data.shape[0], n_pcs))
    return pca


#: One Gram pass at a time in this process. A pass holds more memory on the workers than any
#: other: each partial task holds its share of row blocks and a features x features partial
#: (at 200,000 cells, 4 tasks of about 400 MB). Meanwhile another draw's other passes
#: (scaling moments, embedding) and its neighbor graph keep the cores busy.
_GRAM_PASS = threading.Lock()


def _pca_of_partials(partial: np.ndarray, scaling: Scaling, n_cells: int, n_pcs: int) -> PCA:
    return pca_from_gram(_gram_from_partials(partial, scaling, n_cells), n_pcs)


def pca_from_gram(gram: np.ndarray, n_pcs: int) -> PCA:
    """Top ``n_pcs`` eigenvectors of the Gram matrix, signs fixed for reproducibility.

    Each component is oriented so that its largest-magnitude loading is positive, which makes
    the embedding independent of the eigensolver's arbitrary sign choice.
    """
    with _EIGENSOLVER:
        return _top_eigenvectors(gram, n_pcs)


#: One eigensolver at a time: ARPACK holds the GIL between its products, and each product
#: already uses every core's BLAS threads, so two at once only slow each other down.
_EIGENSOLVER = threading.Lock()


def _top_eigenvectors(gram: np.ndarray, n_pcs: int) -> PCA:
    n = gram.shape[0]
    n_pcs = min(n_pcs, n)
    if n_pcs < n - 1:  # Lanczos to machine precision; the fixed start vector keeps it repeatable
        # The products read one triangle of the Gram matrix (symv), half the memory traffic
        # of a general product: the hundreds of them that Lanczos needs are memory-bound.
        symmetric = gram.T  # the same matrix, in the column order BLAS takes without a copy
        operator = LinearOperator(
            (n, n), matvec=lambda v: symv(1.0, symmetric, v.ravel(), lower=0), dtype=np.float64
        )
        eigenvalues, vectors = eigsh(operator, k=n_pcs, which="LA", v0=np.ones(n), tol=0)
    else:
        eigenvalues, vectors = scipy.linalg.eigh(gram, subset_by_index=[n - n_pcs, n - 1])
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    return PCA(vectors * signs, np.sqrt(np.maximum(eigenvalues, 0.0)))


def _project(
    block: sp.csr_matrix, first_row: int, scaling: Scaling, weighted: np.ndarray
) -> np.ndarray:
    """Z V of one block: capped X (V / sd) minus the constant mean (V / sd)."""
    return scaling.capped(block) @ weighted - scaling.mean @ weighted


def cell_embeddings(data: da.Array, scaling: Scaling, pca: PCA) -> da.Array:
    """Lazy cells x PCs embedding, U * S as Seurat's ``Embeddings(obj, 'pca')``."""
    weighted = scaling.inv_std[:, None] * pca.loadings
    return map_row_blocks(
        data, _project, weighted.shape[1], scaling, weighted, meta=np.empty((0, 0))
    )
