"""The Gaussian copula of the ``*-copula`` nulls: gene-gene correlation of the data's normal
scores, estimated out of core, and correlated normal scores for sampling.

recall's R ``*_copula`` nulls call scDesign3 with one cell type and intercept-only formulas,
``copula = "gaussian"``: per gene a marginal ``F`` fitted by maximum likelihood, then the
normal scores ``z = Phi^-1(u)`` of the data, with ``u = F(x)`` for continuous data and the
randomized transform ``u = F(x - 1) + V (F(x) - F(x - 1))``, ``V ~ U(0, 1)``, for counts;
``u`` is clipped into ``[1e-6, 1 - 1e-6]`` (scDesign3's epsilon, which keeps ``z`` finite
when a count lies far in the fitted tail). The copula is the Pearson correlation ``R`` of
these scores. New cells are ``z ~ N(0, R)``, ``x = F^-1(Phi(z))``.

For counts of a few per cell, the randomized transform adds noise to the scores, so ``R``
(and the artificial genes' correlation) is lower than the data's; scDesign3 does the same.

Here the scores are made on the workers, chunk by chunk, with ``V`` drawn per fixed block of
absolute rows (stream ``SCORE_STREAM``); each task accumulates the sum and the cross product
``Z^T Z`` (p x p, float64, BLAS ``syrk``) of its rows, and the partials are summed in a tree,
so the fit equals the one-chunk fit up to float rounding, for any chunking. Genes with a
point-mass marginal (always zero, or constant) get ``z = 0``: they have zero variance and an
identity row and column in ``R``. Where ``R`` is not positive definite (fewer cells than
genes; R's Cholesky-based ``mvnfast::rmvn`` fails there), its eigenvalues are clipped at
``1e-6`` and it is rescaled to unit diagonal before the Cholesky factor ``L`` is taken.
Sampling draws ``z = N L^T`` from standard normals ``N``, per RNG block of rows.

Cost, for N cells and p variable genes: the fit holds p x p float64 matrices (32 MB at
p = 2,000, 800 MB at 10,000, 3.2 GB at 20,000): one per partial on the workers (at most
``recall.copula-partials`` of them, plus the tree sums) and a few on the client (cross product,
correlation, its Cholesky factor or eigenvectors); every worker holds ``L`` while sampling.
Time is O(N p^2) flops twice: ``N p^2`` for the cross product and ``2 N p^2`` to sample, as
for the PCA Gram matrix of the 2p features, but dense. At p = 2,000 one core fits about
3,000 cells per second and samples about 2,500, where the inverse CDFs cost more than the
matrix products. We support ``p`` up to the ``recall.copula-max-genes`` knob (10,000):
beyond that the matrices no longer fit a typical worker several times over, and every pass
over 1M cells costs more than 1e14 flops.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import dsyrk
from scipy.special import ndtri

from recall_dask import config
from recall_dask._chunks import RNG_BLOCK_ROWS, rng_block_spans, sum_row_blocks
from recall_dask.nulls.marginals import Marginal
from recall_dask.progress import compute

SCORE_STREAM = 0x636F70  # "cop": uniforms of the randomized transform of the data
_EPSILON = 1e-6  # scDesign3's clip of u
_MIN_EIGENVALUE = 1e-6
_MIN_VARIANCE = 1e-12  # scores of a non-constant gene have variance ~1


def normal_scores(
    marginal: Marginal, counts: sp.csr_matrix, v: np.ndarray, depth: np.ndarray | None = None
) -> np.ndarray:
    """Normal scores (dense float64, rows x genes) of ``counts`` under ``marginal`` in cells of
    size factors ``depth`` (None: the marginal itself), with uniforms ``v`` for the randomized
    transform; 0 for point-mass genes."""
    u = marginal.uniform_scores(counts, v, depth)
    with np.errstate(invalid="ignore"):
        z = ndtri(np.clip(u, _EPSILON, 1.0 - _EPSILON))
    z[:, marginal.point_mass()] = 0.0
    return z


def _score_partial(
    blocks: list[tuple[sp.csr_matrix, int]],
    marginal: Marginal | tuple[Marginal, ...],
    seed: int,
    size_factors: np.ndarray | None,
    batches: np.ndarray | None,
) -> np.ndarray:
    """Upper triangle of ``Z^T Z`` (rows 0..p-1) and column sums of ``Z`` (row p) of the
    normal scores of some row blocks, given with their first rows; with ``batches``, each
    cell's scores under its own batch's marginal."""
    p = (marginal[0] if batches is not None else marginal).n_genes
    cross = np.zeros((p, p), order="F")
    total = np.zeros(p)
    for block, first_row in blocks:
        block = sp.csr_matrix(block)
        done = 0
        for rng_block, start, stop in rng_block_spans(first_row, block.shape[0]):
            seeds = np.random.SeedSequence([seed, SCORE_STREAM, rng_block])
            v = np.random.default_rng(seeds).random((RNG_BLOCK_ROWS, p))[start:stop]
            rows = slice(first_row + done, first_row + done + stop - start)
            depth = None if size_factors is None else size_factors[rows]
            counts = block[done : done + stop - start]
            if batches is None:
                z = normal_scores(marginal, counts, v, depth)
            else:
                z = np.empty((stop - start, p))
                codes = batches[rows]
                for batch in np.unique(codes):
                    members = np.flatnonzero(codes == batch)
                    z[members] = normal_scores(
                        marginal[batch],
                        counts[members],
                        v[members],
                        None if depth is None else depth[members],
                    )
            done += stop - start
            cross = dsyrk(1.0, z.T, beta=1.0, c=cross, trans=0, lower=0, overwrite_c=1)
            total += z.sum(axis=0)
    return np.vstack([cross, total])


def fit_correlation(
    counts: da.Array,
    marginal: Marginal | tuple[Marginal, ...],
    seed: int,
    size_factors: np.ndarray | None = None,
    batches: np.ndarray | None = None,
) -> np.ndarray:
    """Copula correlation (p x p) of the normal scores of ``counts`` (cells x genes, row
    chunked CSR blocks of raw counts) under ``marginal`` in cells of ``size_factors`` (None:
    the marginal itself), streamed once; with ``batches`` (a batch code per cell), each
    cell's scores under its batch's marginal (``marginal[code]``), pooled; see the module
    docstring."""
    n_cells, p = counts.shape
    batch = -(-len(counts.chunks[0]) // config.get("copula-partials"))
    scores = sum_row_blocks(
        counts,
        _score_partial,
        (p + 1, p),
        marginal,
        seed,
        size_factors,
        batches,
        batch=batch,
        first_rows=True,
    )
    (partial,) = compute(scores)
    return correlation_from_sums(partial[:p], partial[p], n_cells)


def correlation_from_sums(cross: np.ndarray, total: np.ndarray, n: int) -> np.ndarray:
    """Pearson correlation from the upper triangle of ``Z^T Z`` and the column sums of ``Z``;
    genes of zero variance get an identity row and column."""
    cross = np.triu(cross)
    cross += np.triu(cross, 1).T
    mean = total / n
    cross -= n * np.outer(mean, mean)
    variance = np.diag(cross) / max(n - 1, 1)
    varying = variance > _MIN_VARIANCE
    scale = np.where(varying, 1.0 / np.sqrt(np.where(varying, variance, 1.0)), 0.0)
    cross *= scale[:, None] / max(n - 1, 1)
    cross *= scale[None, :]
    np.fill_diagonal(cross, 1.0)
    return cross


def cholesky_factor(correlation: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of ``correlation``, repaired first if it is not positive
    definite: eigenvalues clipped at ``_MIN_EIGENVALUE``, then rescaled to unit diagonal."""
    try:
        return np.linalg.cholesky(correlation)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(correlation)
        repaired = (vectors * np.maximum(values, _MIN_EIGENVALUE)) @ vectors.T
        scale = 1.0 / np.sqrt(np.diag(repaired))
        return np.linalg.cholesky(repaired * scale[:, None] * scale[None, :])


def correlated_normals(rng: np.random.Generator, cholesky: np.ndarray, n_rows: int) -> np.ndarray:
    """``n_rows`` draws of ``N(0, L L^T)`` (rows x genes)."""
    return rng.standard_normal((n_rows, cholesky.shape[0])) @ cholesky.T
