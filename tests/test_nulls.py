"""Null fits against closed forms and slow oracles; sampling against chunking and schedulers."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ROW_CHUNKINGS, as_row_chunked
from distributed import Client, LocalCluster
from scipy.optimize import minimize
from scipy.stats import nbinom

from recall_dask.errors import InputError
from recall_dask.nulls import (
    NULL_METHODS,
    NullModel,
    artificial_genes,
    fit_nb_theta,
    fit_null,
    fit_zip_moments,
)

N_CELLS = 217  # the conftest "uneven" layout covers 217 rows
DEGENERATE = ["all-zero", "no-zeros", "only-0-1", "single-nonzero", "constant"]


def _degenerate_columns(n: int) -> np.ndarray:
    """Columns in the order of DEGENERATE."""
    cols = np.zeros((n, len(DEGENERATE)))
    cols[:, 1] = 1 + np.arange(n) % 5
    cols[::3, 2] = 1
    cols[7, 3] = 4
    cols[:, 4] = 3
    return cols


def _count_matrix(rng: np.random.Generator) -> np.ndarray:
    """Overdispersed genes, a ZIP gene, then the degenerate columns."""
    nb = rng.poisson(rng.gamma(0.6, [0.5, 3.0, 8.0], size=(N_CELLS, 3)))
    zip_gene = rng.poisson(2.5, N_CELLS) * (rng.random(N_CELLS) > 0.4)
    return np.column_stack([nb, zip_gene, _degenerate_columns(N_CELLS)])


def _histogram(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, counts = np.unique(column[column > 0], return_counts=True)
    return values, counts


def _zip_model(rate: float, pi: float, p: int = 3) -> NullModel:
    return NullModel("zip", np.full(p, rate), np.full(p, pi), np.full(p, np.inf))


# --- ZIP by moments ---------------------------------------------------------------------


def test_zip_moments_solve_the_moment_equations_of_a_hand_example():
    # data 0, 0, 1, 2, 3: r0 = 0.4, mean = 1.2, g = 2, lambda = 2 + W0(-2 e^-2) = 1.5936
    lam, pi = fit_zip_moments(np.array([1.2]), np.array([0.4]))
    assert lam[0] == pytest.approx(1.5936, abs=1e-4)
    assert lam[0] / (1 - np.exp(-lam[0])) == pytest.approx(2.0, rel=1e-12)
    assert (1 - pi[0]) * lam[0] == pytest.approx(1.2, rel=1e-12)
    assert pi[0] + (1 - pi[0]) * np.exp(-lam[0]) == pytest.approx(0.4, rel=1e-12)


def test_zip_moments_recover_simulated_parameters(rng):
    n, lam_true, pi_true = 200_000, np.array([0.7, 3.0, 12.0]), np.array([0.2, 0.4, 0.8])
    x = rng.poisson(lam_true, size=(n, 3)) * (rng.random((n, 3)) >= pi_true)
    lam, pi = fit_zip_moments(x.mean(axis=0), (x == 0).mean(axis=0))
    np.testing.assert_allclose(lam, lam_true, rtol=0.03)
    np.testing.assert_allclose(pi, pi_true, atol=0.01)


def test_zip_degenerate_genes_get_documented_valid_nulls():
    cols = _degenerate_columns(N_CELLS)
    mean = cols.mean(axis=0)
    lam, pi = fit_zip_moments(mean, (cols == 0).mean(axis=0))
    assert (lam[0], pi[0]) == (0.0, 1.0)
    for poisson in (1, 2, 4):  # no zeros, only 0/1 values, constant
        assert (lam[poisson], pi[poisson]) == (mean[poisson], 0.0)
    assert lam[3] > 0 and 0 < pi[3] < 1
    assert (1 - pi[3]) * lam[3] == pytest.approx(mean[3])


# --- NB by maximum likelihood -----------------------------------------------------------


def test_nb_mle_recovers_simulated_parameters(rng):
    mu, theta = 2.0, 0.7
    x = rng.negative_binomial(theta, theta / (theta + mu), size=100_000)
    assert x.mean() == pytest.approx(mu, rel=0.02)
    assert fit_nb_theta(x.size, *_histogram(x)) == pytest.approx(theta, rel=0.05)


def test_nb_mle_matches_direct_maximization_over_the_full_sample(rng):
    x = rng.negative_binomial(1.3, 1.3 / (1.3 + 4.0), size=300)

    def negative_loglik(log_params):
        mu, size = np.exp(log_params)
        return -nbinom.logpmf(x, size, size / (size + mu)).sum()

    direct = minimize(
        negative_loglik,
        x0=[0.0, 0.0],
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 5000},
    )
    mu_direct, theta_direct = np.exp(direct.x)
    assert x.mean() == pytest.approx(mu_direct, rel=1e-5)
    assert fit_nb_theta(x.size, *_histogram(x)) == pytest.approx(theta_direct, rel=1e-4)


@pytest.mark.parametrize(
    "column",
    [np.array([1, 2, 1, 2, 2, 1]), np.array([0, 3, 3, 3]), np.zeros(9)],
    ids=["underdispersed", "constant", "all-zero"],
)
def test_nb_without_overdispersion_is_poisson(column):
    assert fit_nb_theta(column.size, *_histogram(column)) == np.inf


# --- fit_null: one streaming pass equals the dense computation ----------------------------


@pytest.mark.parametrize("method", NULL_METHODS)
@pytest.mark.parametrize("chunks", ROW_CHUNKINGS.values(), ids=ROW_CHUNKINGS.keys())
def test_fit_null_equals_dense_fit(rng, chunks, method):
    dense = _count_matrix(rng)
    model = fit_null(as_row_chunked(sp.csr_matrix(dense.astype(np.float32)), chunks), method)
    assert model.method == method
    if method == "zip":
        lam, pi = fit_zip_moments(dense.mean(axis=0), (dense == 0).mean(axis=0))
        np.testing.assert_allclose(model.rate, lam, rtol=1e-12)
        np.testing.assert_allclose(model.pi, pi, rtol=1e-12, atol=1e-15)
        assert np.all(np.isinf(model.theta))
    else:
        theta = [fit_nb_theta(N_CELLS, *_histogram(col)) for col in dense.T]
        np.testing.assert_allclose(model.rate, dense.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(model.theta, theta, rtol=1e-9)
        assert np.all(model.pi == 0)


@pytest.mark.parametrize("dtype", [np.int32, np.float64], ids=["int32", "float64"])
def test_fit_null_accepts_integer_and_float_blocks(rng, dtype):
    dense = _count_matrix(rng)
    reference = fit_null(as_row_chunked(sp.csr_matrix(dense.astype(np.float32)), 37), "nb")
    model = fit_null(as_row_chunked(sp.csr_matrix(dense.astype(dtype)), 50), "nb")
    np.testing.assert_allclose(model.theta, reference.theta, rtol=1e-9)


@pytest.mark.parametrize("method", NULL_METHODS)
def test_degenerate_genes_give_valid_parameters_and_samples(method):
    cols = _degenerate_columns(N_CELLS)
    model = fit_null(as_row_chunked(sp.csr_matrix(cols), 37), method)
    assert np.all(np.isfinite(model.rate)) and np.all(model.rate >= 0)
    assert np.all((model.pi >= 0) & (model.pi <= 1))
    assert np.all(model.theta > 0) and not np.any(np.isnan(model.theta))
    draws = model.sample(0, 3000, seed=1).toarray()
    assert np.all(draws >= 0) and np.all(draws == np.round(draws))
    assert not draws[:, 0].any()
    np.testing.assert_allclose(draws.mean(axis=0), model.mean(), rtol=0.1, atol=0.01)


def test_fit_null_rejects_bad_input(rng):
    data = as_row_chunked(sp.csr_matrix(_count_matrix(rng)), 37)
    with pytest.raises(InputError, match="zip, nb"):
        fit_null(data, "poisson")
    with pytest.raises(InputError, match="non-negative integers"):
        fit_null(as_row_chunked(sp.csr_matrix(np.array([[0.5, 1.0], [2.0, 0.0]])), 1))
    with pytest.raises(InputError, match="non-negative integers"):
        fit_null(as_row_chunked(sp.csr_matrix(np.array([[-1.0, 1.0]])), 1))
    with pytest.raises(InputError, match="chunked by rows only"):
        fit_null(da.from_array(_count_matrix(rng), chunks=(50, 2)))


# --- sampling ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> dict[str, NullModel]:
    rng = np.random.default_rng(7)
    data = as_row_chunked(sp.csr_matrix(_count_matrix(rng)), 50)
    return {method: fit_null(data, method) for method in NULL_METHODS}


@pytest.mark.parametrize("method", NULL_METHODS)
def test_sample_does_not_depend_on_chunking(models, method):
    model = models[method]
    whole = model.sample(0, 5000, seed=11)
    bounds = [0, 37, 1037, 1038, 2048, 4096, 5000]
    pieces = [model.sample(a, b - a, seed=11) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert whole.shape == (5000, model.n_genes) and whole.dtype == np.float32
    assert isinstance(whole, sp.csr_matrix)
    np.testing.assert_array_equal(sp.vstack(pieces).toarray(), whole.toarray())
    np.testing.assert_array_equal(model.sample(1500, 10, 11).toarray(), whole[1500:1510].toarray())
    assert model.sample(3, 0, 11).shape == (0, model.n_genes)


def test_seeds_give_different_genes(models):
    model = models["zip"]
    assert (model.sample(0, 2000, 1) != model.sample(0, 2000, 2)).nnz > 0


@pytest.mark.parametrize("method", NULL_METHODS)
def test_artificial_genes_match_the_fitted_null(models, method):
    model = models[method]
    draws = model.sample(0, 20_000, seed=3).toarray()
    n = draws.shape[0]
    mean_se = draws.std(axis=0) / np.sqrt(n)
    zero = model.zero_probability()
    zero_se = np.sqrt(zero * (1 - zero) / n)
    assert np.all(np.abs(draws.mean(axis=0) - model.mean()) <= 5 * mean_se + 1e-12)
    assert np.all(np.abs((draws == 0).mean(axis=0) - zero) <= 5 * zero_se + 1e-12)


def test_zip_sampler_uses_structural_zeros():
    draws = _zip_model(rate=30.0, pi=0.25).sample(0, 8000, seed=5).toarray()
    assert (draws == 0).mean() == pytest.approx(0.25, abs=0.02)


def test_artificial_genes_same_on_threads_and_processes(models):
    model = models["nb"]
    chunks = (700, 37, 1, 1262)
    lazy = artificial_genes(model, chunks, seed=9)
    assert lazy.chunks == (chunks, (model.n_genes,)) and lazy.dtype == np.float32
    threaded = lazy.compute(scheduler="threads")
    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        distributed = artificial_genes(model, chunks, seed=9).compute()
    assert isinstance(threaded, sp.csr_matrix) and threaded.dtype == np.float32
    np.testing.assert_array_equal(threaded.toarray(), distributed.toarray())
    np.testing.assert_array_equal(threaded.toarray(), model.sample(0, 2000, 9).toarray())
