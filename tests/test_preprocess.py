"""Preprocessing: the vst variance trend (scikit-misc's loess, and our direct fit where loess
is singular) and log-normalization of the original genes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ROW_CHUNKINGS, as_row_chunked
from skmisc.loess import loess

from recall_dask.preprocess import (
    LOESS_SPAN,
    _vst_expected_variance,
    local_quadratic_fit,
    log_normalized,
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
