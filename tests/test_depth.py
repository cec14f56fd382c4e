"""Cell depth and the depth-aware nulls: library sizes, size factors, depth bins and strata;
fits with the cells' depths against in-memory fits and simulated truth; artificial genes that
carry each cell's depth; and calibration that no longer certifies depth as cell types."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ROW_CHUNKINGS, as_row_chunked, degenerate_columns, histogram
from scipy.stats import kstest

from recall_dask import recall
from recall_dask.errors import InputError
from recall_dask.nulls import NULL_METHODS, NullModel, fit_null
from recall_dask.nulls.depth import DepthBins
from recall_dask.nulls.marginals import (
    CountMarginal,
    fit_nb_theta,
    fit_zip_depth,
    fit_zip_moments,
)
from recall_dask.preprocess.depth import depth_strata, library_sizes, size_factors
from recall_dask.simulate import simulate

N_CELLS = 217


def _factors(rng: np.random.Generator, n: int, sd: float = 0.6) -> np.ndarray:
    return size_factors(np.round(rng.lognormal(7.0, sd, n)))


def _depth_counts(rng: np.random.Generator, factors: np.ndarray) -> np.ndarray:
    """Genes whose mean scales with each cell's size factor (overdispersed, zero-inflated,
    Poisson), then the degenerate columns."""
    n = factors.size
    nb = rng.poisson(rng.gamma(2.0, np.outer(factors, [0.4, 2.0, 6.0]) / 2.0))
    zip_gene = rng.poisson(3.0 * factors) * (rng.random(n) > 0.3)
    poisson_gene = rng.poisson(0.8 * factors)
    return np.column_stack([nb, zip_gene, poisson_gene, degenerate_columns(n)])


# --- library sizes, size factors, bins and strata -----------------------------------------


@pytest.mark.parametrize("chunks", ROW_CHUNKINGS.values(), ids=ROW_CHUNKINGS.keys())
def test_library_sizes_are_row_totals_for_any_chunking(rng, chunks):
    dense = rng.poisson(1.5, size=(N_CELLS, 30)).astype(np.float32)
    totals = library_sizes(as_row_chunked(sp.csr_matrix(dense), chunks)).compute()
    np.testing.assert_array_equal(totals, dense.sum(axis=1, dtype=np.float64))
    factors = size_factors(totals)
    assert factors.mean() == pytest.approx(1.0) and factors.dtype == np.float64


def test_depth_strata_are_quantile_groups_with_ties_together(rng):
    totals = np.round(rng.lognormal(7.0, 0.5, 1000))
    strata = depth_strata(totals, n_strata=10)
    assert np.bincount(strata).tolist() == pytest.approx([100] * 10, abs=3)
    assert np.bincount(depth_strata(totals)).tolist() == pytest.approx([50] * 20, abs=3)
    order = np.argsort(totals, kind="stable")
    assert (np.diff(strata[order]) >= 0).all(), "deeper cells are never in a lower stratum"
    tied = np.repeat([100.0, 200.0, 300.0], [600, 300, 100])
    assert np.unique(depth_strata(tied)).tolist() == [0, 1, 2]
    for value in (100.0, 200.0, 300.0):
        assert np.unique(depth_strata(tied)[tied == value]).size == 1
    assert np.unique(depth_strata(np.full(50, 7.0))).tolist() == [0]


def test_depth_bins_are_narrow_and_keep_empty_cells_apart(rng):
    factors = _factors(rng, 5000)
    factors[:3] = 0.0
    bins = DepthBins.of(factors)
    assert bins.cells.sum() == 5000 and bins.n_bins <= 65
    assert bins.size[bins.codes[:3]].tolist() == [0.0, 0.0, 0.0]
    assert bins.total() == pytest.approx(factors.sum())
    positive = factors > 0
    log = np.log(factors[positive])
    step = (log.max() - log.min()) / 64
    for b in np.unique(bins.codes[positive]):
        members = log[bins.codes[positive] == b]
        assert members.max() - members.min() <= step * (1 + 1e-9)
    equal = DepthBins.of(np.ones(40))
    assert equal.n_bins == 1 and equal.size.tolist() == [1.0] and equal.cells.tolist() == [40]


# --- fits with the cells' depths -----------------------------------------------------------


def _dense_depth_marginal(dense: np.ndarray, factors: np.ndarray, family: str) -> dict:
    """The depth-aware marginal computed on the whole matrix at once, from its definition."""
    bins = DepthBins.of(factors)
    total = dense.sum(axis=0)
    if family == "zip":
        lam, pi = fit_zip_depth(total, (dense > 0).sum(axis=0), bins)
        return {"rate": lam, "pi": pi, "theta": np.full_like(lam, np.inf)}
    if family == "nb":
        theta = []
        for column in dense.T:
            per_bin = np.bincount(bins.codes, weights=column, minlength=bins.n_bins)
            theta.append(fit_nb_theta(len(column), *histogram(column), bins, per_bin))
        return {"rate": total / factors.sum(), "theta": np.array(theta)}
    if family == "poisson":
        return {"rate": total / factors.sum(), "pi": np.zeros_like(total)}
    positive = factors > 0
    mu = total / factors.sum()
    residual = (dense[positive] - np.outer(factors[positive], mu)) ** 2
    variance = (residual / factors[positive, None]).mean(axis=0)
    return {"mu": mu, "sd": np.sqrt(variance)}


@pytest.mark.parametrize("method", NULL_METHODS)
@pytest.mark.parametrize("chunks", [37, (50, 1, 99, 67)], ids=["37-rows", "uneven"])
def test_depth_aware_fit_equals_the_in_memory_fit(rng, chunks, method):
    factors = _factors(rng, N_CELLS)
    factors[5] = 0.0  # an empty cell
    dense = _depth_counts(rng, factors)
    dense[5] = 0
    counts = as_row_chunked(sp.csr_matrix(dense.astype(np.float32)), chunks)
    model = fit_null(counts, method, size_factors=factors)
    assert model.size_factors is factors
    family = method.removesuffix("-copula")
    for name, expected in _dense_depth_marginal(dense, factors, family).items():
        np.testing.assert_allclose(getattr(model.marginal, name), expected, rtol=1e-9, atol=1e-12)


def test_zip_depth_fit_recovers_simulated_parameters(rng):
    factors = _factors(rng, 40_000)
    rate, pi = np.array([0.3, 1.0, 4.0, 2.0]), np.array([0.0, 0.2, 0.5, 0.7])
    counts = rng.poisson(np.outer(factors, rate)) * (rng.random((factors.size, 4)) >= pi)
    lam, fitted_pi = fit_zip_depth(
        counts.sum(axis=0), (counts > 0).sum(axis=0), DepthBins.of(factors)
    )
    np.testing.assert_allclose(lam, rate, rtol=0.05)
    np.testing.assert_allclose(fitted_pi, pi, atol=0.03)
    # Blind to depth, the zeros of the shallow cells read as zero inflation.
    _, blind_pi = fit_zip_moments(counts.mean(axis=0), (counts == 0).mean(axis=0))
    assert blind_pi[0] > 0.1


def test_nb_depth_fit_recovers_theta_that_a_depth_blind_fit_underestimates(rng):
    factors = _factors(rng, 20_000, sd=0.6)
    bins = DepthBins.of(factors)
    column = rng.poisson(rng.gamma(5.0, 2.0 * factors / 5.0))  # mean 2 s, size 5
    per_bin = np.bincount(bins.codes, weights=column, minlength=bins.n_bins)
    aware = fit_nb_theta(column.size, *histogram(column), bins, per_bin)
    blind = fit_nb_theta(column.size, *histogram(column))
    assert aware == pytest.approx(5.0, rel=0.15)
    assert blind < 2.5


def test_unit_size_factors_are_the_r_null(rng):
    dense = _depth_counts(rng, np.ones(N_CELLS))
    bins = DepthBins.of(np.ones(N_CELLS))
    total, nonzero = dense.sum(axis=0), (dense > 0).sum(axis=0)
    np.testing.assert_allclose(
        fit_zip_depth(total, nonzero, bins),
        fit_zip_moments(total / N_CELLS, 1 - nonzero / N_CELLS),
        rtol=1e-9,
        atol=1e-12,
    )
    for column in dense.T:
        with_bins = fit_nb_theta(N_CELLS, *histogram(column), bins, np.array([column.sum()]))
        assert with_bins == pytest.approx(fit_nb_theta(N_CELLS, *histogram(column)), rel=1e-6)
    counts = as_row_chunked(sp.csr_matrix(dense), 50)
    for method in NULL_METHODS:
        model = fit_null(counts, method, seed=2)
        unit = NullModel(model.method, model.marginal, model.cholesky, np.ones(N_CELLS))
        np.testing.assert_array_equal(
            unit.sample(0, N_CELLS, 9).toarray(), model.sample(0, N_CELLS, 9).toarray()
        )


def test_fit_null_rejects_size_factors_of_another_length(rng):
    counts = as_row_chunked(sp.csr_matrix(_depth_counts(rng, np.ones(N_CELLS))), 50)
    with pytest.raises(InputError, match=r"size_factors has shape \(10,\), expected \(217,\)"):
        fit_null(counts, "zip", size_factors=np.ones(10))


# --- artificial genes that carry each cell's depth ----------------------------------------


@pytest.fixture(scope="module")
def depth_models() -> dict[str, NullModel]:
    rng = np.random.default_rng(3)
    factors = np.tile([0.5, 2.0], N_CELLS // 2 + 1)[:N_CELLS]
    counts = as_row_chunked(sp.csr_matrix(_depth_counts(rng, factors)), 50)
    return {
        method: fit_null(counts, method, seed=5, size_factors=factors) for method in NULL_METHODS
    }


@pytest.mark.parametrize("method", [m for m in NULL_METHODS if m != "gaussian-copula"])
def test_artificial_counts_scale_with_each_cells_depth(depth_models, method):
    """A cell's twin has mean ``rate * s`` and the zero probability of its own depth."""
    model = depth_models[method]
    n = 20_000
    big = NullModel(model.method, model.marginal, model.cholesky, np.tile([0.5, 2.0], n // 2))
    draws = big.sample(0, n, seed=3).toarray()
    for depth, rows in ((0.5, slice(0, None, 2)), (2.0, slice(1, None, 2))):
        part = draws[rows]
        mean_se = part.std(axis=0) / np.sqrt(part.shape[0]) + 1e-12
        assert np.all(np.abs(part.mean(axis=0) - depth * model.mean()) <= 5 * mean_se)
        zero = model.marginal.zero_probability(np.array([depth]))[0]
        zero_se = np.sqrt(zero * (1 - zero) / part.shape[0]) + 1e-12
        assert np.all(np.abs((part == 0).mean(axis=0) - zero) <= 5 * zero_se)


def test_gaussian_twins_are_zero_less_often_in_deeper_cells(depth_models):
    model = depth_models["gaussian-copula"]
    n = 20_000
    big = NullModel(model.method, model.marginal, model.cholesky, np.tile([0.5, 2.0], n // 2))
    draws = big.sample(0, n, seed=3).toarray()
    varying = model.marginal.sd > 0
    shallow, deep = (draws[0::2] == 0).mean(axis=0), (draws[1::2] == 0).mean(axis=0)
    assert np.all(deep[varying] < shallow[varying])


@pytest.mark.parametrize("method", NULL_METHODS)
def test_depth_aware_sample_does_not_depend_on_chunking(depth_models, method):
    model = depth_models[method]
    whole = model.sample(0, N_CELLS, seed=11).toarray()
    bounds = [0, 37, 38, 150, N_CELLS]
    pieces = [model.sample(a, b - a, seed=11) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    np.testing.assert_array_equal(sp.vstack(pieces).toarray(), whole)


def test_randomized_transform_with_each_cells_depth_is_uniform(rng):
    """Counts drawn with their cells' depths are uniform under the depth-aware marginal, and
    not under the same marginal without depth."""
    marginal = CountMarginal(np.array([0.8, 3.0]), np.array([0.3, 0.0]), np.array([np.inf, 2.0]))
    factors = _factors(rng, 20_000, sd=0.8)
    counts = marginal.draw(rng, factors.size, factors)
    v = rng.random((factors.size, 2))
    aware = marginal.uniform_scores(counts, v, factors)
    blind = marginal.uniform_scores(counts, v)
    for gene in range(2):
        assert kstest(aware[:, gene], "uniform").pvalue > 1e-3
        assert kstest(blind[:, gene], "uniform").pvalue < 1e-6


# --- calibration that keeps a population of varying depth whole -----------------------------


def _clusters(adata, **options) -> int:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the starting resolution", UserWarning)
        recall(adata, progress=False, **options)
    return int(adata.uns["recall"]["n_clusters"])


@pytest.fixture(scope="module")
def varying_depth():
    """One population whose depth varies as in real data (sd of log depth 0.6)."""
    return simulate(2000, 10_000, 1, seed=1, depth_sd=0.6, log_mean=-4.0)


def test_depth_aware_recall_keeps_one_population_whole_where_rs_null_splits_it(varying_depth):
    with pytest.warns(UserWarning, match="^--depth none with --null-method zip: the artificial"):
        assert _clusters(varying_depth.copy(), seed=1, null_method="zip", depth="none") > 1
    assert _clusters(varying_depth.copy(), seed=1) == 1


def test_depth_strata_keep_whole_a_population_that_rs_count_splitting_splits(varying_depth):
    with pytest.warns(UserWarning, match="^--method countsplit: both halves of a cell share"):
        r_split = _clusters(
            varying_depth.copy(), seed=1, method="countsplit", split="poisson", depth="none"
        )
    assert r_split > 1
    assert _clusters(varying_depth.copy(), seed=1, method="countsplit") == 1


def test_depth_taken_from_the_variable_genes_themselves_is_a_warning(caplog):
    data = simulate(300, 100, 1, seed=2, log_mean=-1.0)
    with caplog.at_level("WARNING", logger="recall_dask"):
        _clusters(data, n_hvg=100, seed=1)
    assert "of the counts lie outside the" in caplog.text and "fewer --n-hvg" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="recall_dask"):
        _clusters(simulate(300, 100, 1, seed=2, log_mean=-1.0), n_hvg=30, seed=1)
    assert "lie outside" not in caplog.text
