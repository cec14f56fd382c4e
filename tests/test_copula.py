"""The copula correlation, streamed over row chunks, against a dense scipy oracle; the repair of
a correlation that is not positive definite; correlated normal scores."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import as_row_chunked, latent_gaussian_counts, scipy_count_cdf
from scipy.stats import nbinom, norm

from recall_dask._chunks import RNG_BLOCK_ROWS
from recall_dask.nulls import fit_null
from recall_dask.nulls.copula import (
    SCORE_STREAM,
    cholesky_factor,
    correlated_normals,
    fit_correlation,
)
from recall_dask.nulls.marginals import CountMarginal, Marginal

N_CELLS = 2500  # three RNG blocks, the last one partial


def _data(rng: np.random.Generator) -> np.ndarray:
    """Correlated NB genes of low and high means, then an all-zero and a constant gene."""
    means = np.array([0.3, 2.0, 6.0, 40.0])
    counts = latent_gaussian_counts(
        rng, N_CELLS, 4, lambda u: nbinom.ppf(u, 2.0, 2.0 / (2.0 + means))
    )
    return np.column_stack([counts, np.zeros(N_CELLS), np.full(N_CELLS, 3.0)])


def _oracle_correlation(x: np.ndarray, marginal: Marginal, seed: int) -> np.ndarray:
    """scDesign3's normal scores of the whole matrix at once, by scipy; then np.corrcoef."""
    n, p = x.shape
    streams = (np.random.SeedSequence([seed, SCORE_STREAM, b]) for b in range(-(-n // 1024)))
    v = np.vstack([np.random.default_rng(s).random((RNG_BLOCK_ROWS, p)) for s in streams])[:n]
    if isinstance(marginal, CountMarginal):
        lower, upper = scipy_count_cdf(marginal, x - 1), scipy_count_cdf(marginal, x)
        u = lower + v * (upper - lower)
        constant = upper[0] >= 1  # always zero
    else:
        constant = marginal.sd == 0
        u = norm.cdf(x, marginal.mu, np.where(constant, 1.0, marginal.sd))
    z = norm.ppf(np.clip(u, 1e-6, 1 - 1e-6))
    z[:, constant] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.corrcoef(z.T)
    correlation[constant, :] = 0.0
    correlation[:, constant] = 0.0
    np.fill_diagonal(correlation, 1.0)
    return correlation


@pytest.mark.parametrize("method", ["zip-copula", "nb-copula", "poisson-copula", "gaussian-copula"])
def test_streamed_correlation_equals_the_dense_oracle_for_any_chunking(rng, method):
    x = _data(rng)
    marginal = fit_null(as_row_chunked(sp.csr_matrix(x), -1), method).marginal
    one_chunk = fit_correlation(as_row_chunked(sp.csr_matrix(x), -1), marginal, seed=4)
    chunked = fit_correlation(as_row_chunked(sp.csr_matrix(x), 37), marginal, seed=4)
    np.testing.assert_allclose(chunked, one_chunk, rtol=0, atol=1e-12)
    np.testing.assert_allclose(one_chunk, _oracle_correlation(x, marginal, seed=4), atol=1e-8)
    np.testing.assert_array_equal(one_chunk[4], np.eye(6)[4])  # all-zero gene: identity
    assert np.all(one_chunk[:4, :4][np.triu_indices(4, 1)] > 0.1)


def test_fewer_cells_than_genes_give_a_repaired_factor(rng):
    x = rng.poisson(rng.gamma(1.0, 2.0, size=(30, 60)))
    model = fit_null(as_row_chunked(sp.csr_matrix(x.astype(np.float64)), 7), "poisson-copula")
    product = model.cholesky @ model.cholesky.T
    np.testing.assert_allclose(np.diag(product), 1.0, rtol=1e-12)
    assert np.linalg.eigvalsh(product).min() > 0
    assert np.all(np.isfinite(model.sample(0, 100, seed=1).toarray()))


def test_cholesky_factor_repairs_an_indefinite_matrix():
    indefinite = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    assert np.linalg.eigvalsh(indefinite).min() < 0
    factor = cholesky_factor(indefinite)
    repaired = factor @ factor.T
    np.testing.assert_allclose(np.diag(repaired), 1.0, rtol=1e-12)
    assert np.linalg.eigvalsh(repaired).min() > 0
    assert np.all(np.sign(repaired) == np.sign(indefinite))
    definite = np.array([[1.0, 0.5], [0.5, 1.0]])
    np.testing.assert_allclose(cholesky_factor(definite), np.linalg.cholesky(definite))


def test_correlated_normals_have_the_correlation(rng):
    correlation = np.array([[1.0, 0.8, -0.3], [0.8, 1.0, 0.0], [-0.3, 0.0, 1.0]])
    n = 40_000
    z = correlated_normals(rng, np.linalg.cholesky(correlation), n)
    se = (1 - correlation**2) / np.sqrt(n)
    assert np.all(np.abs(np.corrcoef(z.T) - correlation) <= 5 * se + 1e-12)
    assert np.all(np.abs(z.std(axis=0) - 1) <= 5 / np.sqrt(2 * n))
