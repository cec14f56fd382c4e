"""Preprocessing: Seurat's vst score against a dense oracle and its independence of the
chunking; the variance trend (scikit-misc's loess, and our direct fit where loess is
singular); log-normalization of the original genes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import ROW_CHUNKINGS, as_row_chunked
from skmisc.loess import loess

from recall_dask.preprocess.hvg import (
    LOESS_SPAN,
    _vst_expected_variance,
    local_quadratic_fit,
    top_vst_genes,
    vst_standardized_variance,
)
from recall_dask.preprocess.normalize import log_normalized
from recall_dask.preprocess.scale import column_moments


def vst_oracle(dense: np.ndarray) -> tuple[np.ndarray, int]:
    """Variance (n - 1) of (x - mean) / sd clipped at sqrt(n), over all cells, gene by gene;
    and how many values were clipped."""
    n = dense.shape[0]
    mean, variance = dense.mean(axis=0), dense.var(axis=0, ddof=1)
    sd = np.sqrt(_vst_expected_variance(mean, variance))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.minimum((dense - mean) / sd, np.sqrt(n))
    score = (z**2).sum(axis=0) / (n - 1)
    score[sd == 0] = 0.0
    return score, int(np.sum(z == np.sqrt(n)))


@pytest.fixture(scope="module")
def tied_counts() -> sp.csr_matrix:
    """217 cells x 80 genes: NB-like genes, ten with an outlier beyond the clip, and 10 trios
    of sparse genes, each trio holding the same few counts in different cells (tied scores)."""
    rng = np.random.default_rng(3)
    dense = rng.negative_binomial(2, 2 / (2 + rng.lognormal(0.0, 1.0, 50)), size=(217, 50))
    dense[rng.integers(0, 217, 10), np.arange(10)] += 400
    sparse = np.zeros((217, 30))
    for j in range(30):
        trio = j // 3
        sparse[rng.choice(217, 4 + trio, replace=False), j] = np.arange(4 + trio) % 3 + 1 + trio
    return sp.csr_matrix(np.hstack([dense, sparse]).astype(np.float32))


def scores(matrix: sp.csr_matrix, chunks) -> np.ndarray:
    lazy = as_row_chunked(matrix, chunks)
    return vst_standardized_variance(lazy, column_moments(lazy).compute())


def test_vst_score_matches_the_oracle(tied_counts):
    dense = tied_counts.toarray().astype(np.float64)
    expected, n_clipped = vst_oracle(dense)
    assert n_clipped > 0
    np.testing.assert_allclose(scores(tied_counts, -1), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunks", list(ROW_CHUNKINGS.values()), ids=list(ROW_CHUNKINGS))
def test_vst_ranking_does_not_depend_on_chunking(tied_counts, chunks):
    whole = scores(tied_counts, -1)
    np.testing.assert_array_equal(scores(tied_counts, chunks), whole)  # bit for bit
    assert np.unique(whole[50:]).size == 10, "the sparse genes tie in trios"
    lazy = as_row_chunked(tied_counts, chunks)
    moments = column_moments(lazy).compute()
    one = as_row_chunked(tied_counts, -1)
    names = pd.Index([f"gene{j}" for j in range(tied_counts.shape[1])])
    np.testing.assert_array_equal(
        top_vst_genes(lazy, names, 60, moments),
        top_vst_genes(one, names, 60, column_moments(one).compute()),
    )


def test_direct_fit_equals_loess_direct_surface(rng):
    x = rng.normal(size=2000)
    y = np.sin(x) + rng.normal(scale=0.3, size=x.size)
    reference = loess(x, y, span=LOESS_SPAN, degree=2, surface="direct")
    reference.fit()
    np.testing.assert_allclose(
        local_quadratic_fit(x, y, LOESS_SPAN), reference.outputs.fitted_values, atol=1e-10
    )


def test_direct_fit_reproduces_a_quadratic_through_tied_points():
    x = np.concatenate([np.full(400, -2.0), np.linspace(-1.5, 1.0, 200)])
    y = 1.0 + 0.5 * x - 0.25 * x**2
    np.testing.assert_allclose(local_quadratic_fit(x, y, LOESS_SPAN), y, atol=1e-9)


def test_singular_trend_falls_back_to_the_direct_fit(caplog):
    """Most genes seen in one cell of 400: loess (scikit-misc) raises; the fit goes on."""
    n_cells = 400
    mean = np.concatenate([np.full(300, 1 / n_cells), np.geomspace(0.01, 5, 100)])
    variance = np.concatenate([np.full(300, 1 / n_cells), 1.2 * np.geomspace(0.01, 5, 100)])
    with pytest.raises(ValueError):
        loess(np.log10(mean), np.log10(variance), span=LOESS_SPAN, degree=2).fit()
    expected = _vst_expected_variance(mean, variance)
    assert "pseudoinverse" in caplog.text
    np.testing.assert_allclose(expected[:300], 1 / n_cells, rtol=1e-9)
    assert np.all(np.isfinite(expected)) and np.all(expected > 0)


@pytest.mark.parametrize("chunks", ROW_CHUNKINGS.values(), ids=ROW_CHUNKINGS.keys())
def test_log_normalized_divides_by_the_library_size_of_all_genes(rng, chunks):
    counts = rng.poisson(0.7, size=(217, 40)).astype(float)
    counts[5] = 0  # an empty cell stays zero
    genes = np.array([0, 3, 4, 17, 39])
    library = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(library > 0, np.log1p(counts * 1e4 / library), 0.0)[:, genes]
    lazy = log_normalized(as_row_chunked(sp.csr_matrix(counts), chunks), genes, 1e4)
    assert lazy.shape == (217, genes.size)
    np.testing.assert_allclose(lazy.compute().toarray(), expected, rtol=1e-12)
