"""Null fits against the dense computation; artificial genes against the fitted null, the data's
correlation, chunking, seeds and schedulers."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    ROW_CHUNKINGS,
    as_row_chunked,
    degenerate_columns,
    histogram,
    latent_gaussian_counts,
    scipy_count_quantile,
)
from distributed import Client, LocalCluster
from oracles import artificial_genes
from scipy.stats import nbinom, norm, poisson

from recall_dask.errors import InputError
from recall_dask.nulls import NULL_METHODS, NullModel, fit_null
from recall_dask.nulls.marginals import CountMarginal, fit_nb_theta, fit_zip_moments

N_CELLS = 217  # the conftest "uneven" layout covers 217 rows
COPULA_METHODS = [m for m in NULL_METHODS if m.endswith("-copula")]
INDEPENDENT_METHODS = [m for m in NULL_METHODS if m not in COPULA_METHODS]


def _count_matrix(rng: np.random.Generator) -> np.ndarray:
    """Overdispersed genes, a ZIP gene, then the degenerate columns."""
    nb = rng.poisson(rng.gamma(0.6, [0.5, 3.0, 8.0], size=(N_CELLS, 3)))
    zip_gene = rng.poisson(2.5, N_CELLS) * (rng.random(N_CELLS) > 0.4)
    return np.column_stack([nb, zip_gene, degenerate_columns(N_CELLS)])


def _dense_marginal(dense: np.ndarray, family: str) -> dict[str, np.ndarray]:
    """The marginal's parameters computed on the whole matrix at once."""
    mean = dense.mean(axis=0)
    inf = np.full_like(mean, np.inf)
    if family == "zip":
        lam, pi = fit_zip_moments(mean, (dense == 0).mean(axis=0))
        return {"rate": lam, "pi": pi, "theta": inf}
    if family == "nb":
        theta = [fit_nb_theta(len(dense), *histogram(col)) for col in dense.T]
        return {"rate": mean, "pi": np.zeros_like(mean), "theta": np.array(theta)}
    if family == "poisson":
        return {"rate": mean, "pi": np.zeros_like(mean), "theta": inf}
    return {"mu": mean, "sd": dense.std(axis=0)}


# --- fit_null: streaming passes equal the dense computation -------------------------------


@pytest.mark.parametrize("method", NULL_METHODS)
@pytest.mark.parametrize("chunks", ROW_CHUNKINGS.values(), ids=ROW_CHUNKINGS.keys())
def test_fit_null_equals_dense_fit(rng, chunks, method):
    dense = _count_matrix(rng)
    model = fit_null(as_row_chunked(sp.csr_matrix(dense.astype(np.float32)), chunks), method)
    assert model.method == method
    assert (model.cholesky is not None) == (method in COPULA_METHODS)
    for name, expected in _dense_marginal(dense, method.removesuffix("-copula")).items():
        np.testing.assert_allclose(getattr(model.marginal, name), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.int32, np.float64], ids=["int32", "float64"])
def test_fit_null_accepts_integer_and_float_blocks(rng, dtype):
    dense = _count_matrix(rng)
    reference = fit_null(as_row_chunked(sp.csr_matrix(dense.astype(np.float32)), 37), "nb")
    model = fit_null(as_row_chunked(sp.csr_matrix(dense.astype(dtype)), 50), "nb")
    np.testing.assert_allclose(model.marginal.theta, reference.marginal.theta, rtol=1e-9)


@pytest.mark.parametrize("method", NULL_METHODS)
def test_degenerate_genes_give_valid_nulls_and_samples(method):
    model = fit_null(as_row_chunked(sp.csr_matrix(degenerate_columns(N_CELLS)), 37), method)
    assert np.all(np.isfinite(model.mean())) and np.all(model.mean() >= 0)
    assert np.all((model.zero_probability() >= 0) & (model.zero_probability() <= 1))
    draws = model.sample(0, 3000, seed=1).toarray()
    assert np.all(np.isfinite(draws)) and np.all(draws >= 0)
    assert not draws[:, 0].any()
    if method != "gaussian-copula":
        assert np.all(draws == np.round(draws))
    np.testing.assert_allclose(draws.mean(axis=0), model.mean(), rtol=0.1, atol=0.01)


def test_fit_null_rejects_bad_input(rng):
    data = as_row_chunked(sp.csr_matrix(_count_matrix(rng)), 37)
    with pytest.raises(InputError, match="zip, nb, poisson, zip-copula, .*, gaussian-copula"):
        fit_null(data, "zinb")
    for method in ("nb", "gaussian-copula"):
        with pytest.raises(InputError, match="non-negative integers"):
            fit_null(as_row_chunked(sp.csr_matrix(np.array([[0.5, 1.0], [2.0, 0.0]])), 1), method)
    with pytest.raises(InputError, match="non-negative integers"):
        fit_null(as_row_chunked(sp.csr_matrix(np.array([[-1.0, 1.0]])), 1), "zip-copula")
    with pytest.raises(InputError, match="chunked by rows only"):
        fit_null(da.from_array(_count_matrix(rng), chunks=(50, 2)))
    with (
        dask.config.set({"recall.copula-max-genes": 8}),
        pytest.raises(InputError, match="at most 8 variable genes \\(got 9\\).*--n-hvg"),
    ):
        fit_null(data, "nb-copula")
    assert fit_null(data, "nb").n_genes == 9


# --- sampling: the fitted marginals, for every method --------------------------------------


@pytest.fixture(scope="module")
def models() -> dict[str, NullModel]:
    rng = np.random.default_rng(7)
    data = as_row_chunked(sp.csr_matrix(_count_matrix(rng)), 50)
    return {method: fit_null(data, method, seed=5) for method in NULL_METHODS}


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
    marginal = CountMarginal(np.full(3, 30.0), np.full(3, 0.25), np.full(3, np.inf))
    draws = NullModel("zip", marginal).sample(0, 8000, seed=5).toarray()
    assert (draws == 0).mean() == pytest.approx(0.25, abs=0.02)


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
    chunked = artificial_genes(model, (37,) * 135 + (5,), seed=11).compute(scheduler="sync")
    np.testing.assert_array_equal(chunked.toarray(), whole.toarray())


@pytest.mark.parametrize("method", NULL_METHODS)
def test_seeds_give_different_genes(models, method):
    model = models[method]
    assert (model.sample(0, 2000, 1) != model.sample(0, 2000, 1)).nnz == 0
    assert (model.sample(0, 2000, 1) != model.sample(0, 2000, 2)).nnz > 0


def test_copula_fit_seed_changes_only_the_correlation_estimate(rng):
    data = as_row_chunked(sp.csr_matrix(_count_matrix(rng)), 50)
    first, again, other = (fit_null(data, "nb-copula", seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(first.cholesky, again.cholesky)
    assert not np.array_equal(first.cholesky, other.cholesky)
    np.testing.assert_array_equal(first.marginal.theta, other.marginal.theta)


def test_artificial_genes_same_on_threads_and_processes(models):
    chunks = (700, 37, 1, 1262)
    lazy = {m: artificial_genes(models[m], chunks, seed=9) for m in ("nb", "nb-copula")}
    assert lazy["nb"].chunks == (chunks, (9,)) and lazy["nb"].dtype == np.float32
    threaded = {m: x.compute(scheduler="threads") for m, x in lazy.items()}
    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        distributed = {m: x.compute() for m, x in lazy.items()}
    for method, values in threaded.items():
        assert isinstance(values, sp.csr_matrix) and values.dtype == np.float32
        np.testing.assert_array_equal(values.toarray(), distributed[method].toarray())
        np.testing.assert_array_equal(values.toarray(), models[method].sample(0, 2000, 9).toarray())


# --- sampling: the gene-gene correlation ----------------------------------------------------

N_CORRELATED = 20_000
#: Data of each family with a latent Gaussian copula (every correlation 0.6), counts high
#: enough that the randomized transform of discrete data barely attenuates the copula.
HIGH_MEANS = np.array([20.0, 30.0, 50.0, 80.0])
DATA_OF_FAMILY = {
    "zip": lambda u: np.where(
        u < 0.05, 0.0, poisson.ppf(np.clip((u - 0.05) / 0.95, 0, 1), HIGH_MEANS)
    ),
    "nb": lambda u: nbinom.ppf(u, 5.0, 5.0 / (5.0 + HIGH_MEANS)),
    "poisson": lambda u: poisson.ppf(u, HIGH_MEANS),
    "gaussian": lambda u: nbinom.ppf(u, 5.0, 5.0 / (5.0 + HIGH_MEANS)),
}


def _correlations(x: np.ndarray) -> np.ndarray:
    return np.corrcoef(x.T)[np.triu_indices(x.shape[1], 1)]


def _correlated_fit(method: str, seed: int) -> tuple[np.ndarray, NullModel]:
    quantile = DATA_OF_FAMILY[method.removesuffix("-copula")]
    data = latent_gaussian_counts(np.random.default_rng(seed), N_CORRELATED, 4, quantile)
    return data, fit_null(as_row_chunked(sp.csr_matrix(data), 4096), method, seed=seed)


@pytest.mark.parametrize("method", COPULA_METHODS)
def test_copula_nulls_reproduce_the_data_correlation(method):
    data, model = _correlated_fit(method, seed=21)
    draws = model.sample(0, N_CORRELATED, seed=22).toarray()
    expected = _correlations(data)
    # two independent estimates of one correlation r: sd of the difference sqrt(2)(1 - r^2)/sqrt(n)
    se = np.sqrt(2) * (1 - expected**2) / np.sqrt(N_CORRELATED)
    assert np.all(expected > 0.4)
    assert np.all(np.abs(_correlations(draws) - expected) <= 5 * se)


@pytest.mark.parametrize("method", INDEPENDENT_METHODS)
def test_independent_nulls_are_uncorrelated(method):
    data, model = _correlated_fit(method + "-copula", seed=23)
    independent = fit_null(as_row_chunked(sp.csr_matrix(data), 4096), method)
    draws = independent.sample(0, N_CORRELATED, seed=24).toarray()
    assert np.all(np.abs(_correlations(draws)) <= 5 / np.sqrt(N_CORRELATED))


def _scipy_copula_sample(model: NullModel, rng: np.random.Generator, n: int) -> np.ndarray:
    """Oracle: ``z ~ N(0, L L^T)`` by numpy, then each marginal's quantile by scipy."""
    correlation = model.cholesky @ model.cholesky.T
    z = rng.multivariate_normal(np.zeros(model.n_genes), correlation, n)
    return scipy_count_quantile(model.marginal, norm.cdf(z))


@pytest.mark.parametrize("method", ["zip-copula", "nb-copula", "poisson-copula"])
def test_low_count_copula_samples_follow_the_fitted_copula(method):
    """At low counts the randomized transform attenuates the fitted correlation (as in
    scDesign3); the samples must still follow the fitted model, checked by an oracle sampler."""
    quantile = {
        "zip-copula": lambda u: np.where(u < 0.3, 0.0, poisson.ppf((u - 0.3) / 0.7, [0.5, 2, 4])),
        "nb-copula": lambda u: nbinom.ppf(u, 1.5, 1.5 / (1.5 + np.array([0.3, 1.0, 4.0]))),
        "poisson-copula": lambda u: poisson.ppf(u, [0.3, 1.0, 4.0]),
    }[method]
    data = latent_gaussian_counts(np.random.default_rng(25), N_CORRELATED, 3, quantile, rho=0.7)
    model = fit_null(as_row_chunked(sp.csr_matrix(data), 4096), method, seed=26)
    draws = model.sample(0, N_CORRELATED, seed=27).toarray()
    oracle = _scipy_copula_sample(model, np.random.default_rng(28), N_CORRELATED)
    expected = _correlations(oracle)
    se = np.sqrt(2) * (1 - expected**2) / np.sqrt(N_CORRELATED)
    assert np.all(np.abs(_correlations(draws) - expected) <= 5 * se)
    assert np.all(_correlations(draws) < _correlations(data))  # attenuated, not reproduced
