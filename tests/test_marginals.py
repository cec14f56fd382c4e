"""Marginal fits against closed forms and slow oracles; distribution functions, quantiles and
the randomized probability integral transform against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import degenerate_columns, histogram, scipy_count_cdf, scipy_count_quantile
from scipy.integrate import quad
from scipy.optimize import minimize
from scipy.stats import nbinom, norm

from recall_dask.nulls.marginals import (
    CountMarginal,
    GaussianMarginal,
    fit_nb_theta,
    fit_zip_moments,
)

N_CELLS = 217


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
    cols = degenerate_columns(N_CELLS)
    mean = cols.mean(axis=0)
    lam, pi = fit_zip_moments(mean, (cols == 0).mean(axis=0))
    assert (lam[0], pi[0]) == (0.0, 1.0)
    for column in (1, 2, 4):  # no zeros, only 0/1 values, constant
        assert (lam[column], pi[column]) == (mean[column], 0.0)
    assert lam[3] > 0 and 0 < pi[3] < 1
    assert (1 - pi[3]) * lam[3] == pytest.approx(mean[3])


# --- NB by maximum likelihood -----------------------------------------------------------


def test_nb_mle_recovers_simulated_parameters(rng):
    mu, theta = 2.0, 0.7
    x = rng.negative_binomial(theta, theta / (theta + mu), size=100_000)
    assert x.mean() == pytest.approx(mu, rel=0.02)
    assert fit_nb_theta(x.size, *histogram(x)) == pytest.approx(theta, rel=0.05)


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
    assert fit_nb_theta(x.size, *histogram(x)) == pytest.approx(theta_direct, rel=1e-4)


@pytest.mark.parametrize(
    "column",
    [np.array([1, 2, 1, 2, 2, 1]), np.array([0, 3, 3, 3]), np.zeros(9)],
    ids=["underdispersed", "constant", "all-zero"],
)
def test_nb_without_overdispersion_is_poisson(column):
    assert fit_nb_theta(column.size, *histogram(column)) == np.inf


# --- distribution functions and quantiles of the count marginals -------------------------

#: Poisson (small, large, above the underflow of F(0)), NB (strong, mild, near-Poisson
#: overdispersion) and zero-inflated genes.
COUNT_GENES = CountMarginal(
    rate=np.array([0.01, 3.0, 800.0, 2500.0, 0.7, 12.0, 900.0, 2.5, 40.0, 0.0]),
    pi=np.array([0, 0, 0, 0, 0, 0, 0, 0.4, 0.05, 1.0]),
    theta=np.array([np.inf] * 4 + [0.3, 4.0, 1e6, np.inf, 2.0, np.inf]),
)


def test_count_quantiles_equal_scipy(rng):
    z = rng.standard_normal((20_000, COUNT_GENES.n_genes))
    draws = COUNT_GENES.quantiles(z)
    assert isinstance(draws, sp.csr_matrix) and draws.dtype == np.float32
    np.testing.assert_array_equal(draws.toarray(), scipy_count_quantile(COUNT_GENES, norm.cdf(z)))


def test_count_cdf_bounds_equal_scipy(rng):
    x = rng.poisson(COUNT_GENES.rate, size=(50, COUNT_GENES.n_genes))
    x[:, -1] = 0  # the always-zero gene
    genes = np.broadcast_to(np.arange(COUNT_GENES.n_genes), x.shape)
    lower, upper = COUNT_GENES.cdf_bounds(x.ravel(), genes.ravel())
    np.testing.assert_allclose(
        lower.reshape(x.shape), scipy_count_cdf(COUNT_GENES, x - 1), rtol=1e-9
    )
    np.testing.assert_allclose(upper.reshape(x.shape), scipy_count_cdf(COUNT_GENES, x), rtol=1e-9)
    zero = scipy_count_cdf(COUNT_GENES, np.zeros((1, COUNT_GENES.n_genes)))[0]
    np.testing.assert_allclose(COUNT_GENES.zero_probability(), zero, rtol=1e-12)


def test_randomized_transform_of_the_marginal_is_uniform(rng):
    n = 40_000
    counts = COUNT_GENES.quantiles(rng.standard_normal((n, COUNT_GENES.n_genes)))
    u = COUNT_GENES.uniform_scores(counts, rng.random(counts.shape))
    lower = scipy_count_cdf(COUNT_GENES, counts.toarray() - 1)
    upper = scipy_count_cdf(COUNT_GENES, counts.toarray())
    assert np.all((lower - 1e-9 <= u) & (u <= upper + 1e-9))
    for q in (0.1, 0.5, 0.9):  # P(u <= q) = q within 5 standard errors
        below = (u <= q).mean(axis=0)
        assert np.all(np.abs(below - q) <= 5 * np.sqrt(q * (1 - q) / n))


# --- the Gaussian marginal, clipped at 0 --------------------------------------------------


def test_gaussian_clipped_mean_and_zero_probability_by_integration():
    marginal = GaussianMarginal(mu=np.array([0.3, 2.0, 0.0, 4.0]), sd=np.array([1.5, 0.4, 0, 0]))
    for j, (mu, sd) in enumerate(zip(marginal.mu[:2], marginal.sd[:2], strict=True)):
        integral, _ = quad(lambda x, mu=mu, sd=sd: x * norm.pdf(x, mu, sd), 0, np.inf)
        assert marginal.mean()[j] == pytest.approx(integral, rel=1e-9)
        assert marginal.zero_probability()[j] == pytest.approx(norm.cdf(0, mu, sd), rel=1e-12)
    np.testing.assert_array_equal(marginal.mean()[2:], [0.0, 4.0])
    np.testing.assert_array_equal(marginal.zero_probability()[2:], [1.0, 0.0])
    np.testing.assert_array_equal(marginal.point_mass(), [False, False, True, True])
    values = marginal.quantiles(np.array([[-1.0, 0.5, 2.0, -3.0]])).toarray()
    np.testing.assert_allclose(values, [[0.0, 2.2, 0.0, 4.0]], rtol=1e-6)
