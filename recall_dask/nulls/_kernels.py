"""Numba kernels of count quantiles and distribution functions, free of dask.

Every count null is a zero-inflated negative binomial (:mod:`recall_dask.nulls.marginals`);
these kernels sum its pmf by recurrence, for the copula nulls' randomized transform of the
data (:func:`count_cdf_bounds`) and their artificial genes (:func:`count_quantiles`), and
for the simulated counts of :mod:`recall_dask.simulate` (:func:`count_inverse`).
"""

import math

import numba
import numpy as np

#: log pmf below which exp() nears the float64 underflow; see count_inverse.
_LOG_TINY = -700.0


@numba.njit(nogil=True, cache=True, inline="always")
def _pmf_ratio(k: int, q: float, r: float, poisson: bool) -> float:
    """``P(k + 1) / P(k)``: Poisson ``mu / (k + 1)`` (q = mu), NB ``(k + r) / (k + 1) q``
    (q = mu / (r + mu))."""
    return q / (k + 1) if poisson else (k + r) / (k + 1) * q


@numba.njit(nogil=True, cache=True, inline="always")
def _pmf_start(mu: float, r: float) -> tuple[int, float, float, bool]:
    """``(k, P(k), q, poisson)``: where summing the NB(mean ``mu``, size ``r``) pmf starts,
    with the ``q`` and kind of :func:`_pmf_ratio`. ``k = 0`` unless F(0) would underflow
    (Poisson means above ~700); then ``k`` is the first count whose pmf is above e^-700, found
    in log space, and the terms skipped add up to less than 1e-300.
    """
    poisson = np.isinf(r)
    log_pmf = -mu if poisson else -r * np.log1p(mu / r)
    q = mu if poisson else mu / (r + mu)
    k = 0
    while log_pmf < _LOG_TINY and k < mu:
        log_pmf += np.log(_pmf_ratio(k, q, r, poisson))
        k += 1
    return k, np.exp(log_pmf), q, poisson


@numba.njit(nogil=True, cache=True)
def count_inverse(u: float, mu: float, r: float) -> int:
    """The NB(mean ``mu``, size ``r``) quantile of ``u`` in [0, 1): smallest k with F(k) > u.
    ``r = inf`` is the Poisson(``mu``) limit.

    Zero is decided without computing F(0) when ``u < 1 - mu`` (Markov: 1 - F(0) <= mu).
    Otherwise the pmf is summed upwards from :func:`_pmf_start` by its recurrence. If rounding
    keeps the summed F below ``u`` (``u`` within ~1e-16 of 1), the search stops once it is
    past the mean and the pmf no longer changes the sum (at the latest when the pmf underflows
    to 0), so it always ends.
    """
    if u < 1.0 - mu:
        return 0
    k, pmf, q, poisson = _pmf_start(mu, r)
    cdf = pmf
    while cdf <= u:
        pmf *= _pmf_ratio(k, q, r, poisson)
        k += 1
        if cdf + pmf == cdf and k > mu:
            break
        cdf += pmf
    return k


@numba.njit(nogil=True, cache=True)
def count_cdf_bounds(
    x: np.ndarray,
    genes: np.ndarray,
    depth: np.ndarray,
    rate: np.ndarray,
    pi: np.ndarray,
    theta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``(F(x - 1), F(x))`` of each count ``x[i] >= 0`` of gene ``genes[i]`` in a cell of size
    factor ``depth[i]``, ``F`` the zero-inflated NB of :func:`count_quantiles`, by summing the
    pmf up to ``x``."""
    lower = np.empty(x.size)
    upper = np.empty(x.size)
    for i in range(x.size):
        j = genes[i]
        k, pmf, q, poisson = _pmf_start(rate[j] * depth[i], theta[j])
        below = 0.0
        at = pmf if k == x[i] else 0.0  # k > x: every pmf up to x is below e^-700
        while k < x[i]:
            below += pmf
            pmf *= _pmf_ratio(k, q, theta[j], poisson)
            k += 1
            at = pmf
        inflated = pi[j] if x[i] > 0 else 0.0
        lower[i] = inflated + (1.0 - pi[j]) * below
        upper[i] = pi[j] + (1.0 - pi[j]) * (below + at)
    return lower, upper


@numba.njit(nogil=True, cache=True)
def count_quantiles(
    z: np.ndarray, depth: np.ndarray, rate: np.ndarray, pi: np.ndarray, theta: np.ndarray
) -> np.ndarray:
    """Counts (float32, rows x genes) at standard normal scores ``z``: ``F_ij^-1(Phi(z))``.

    ``F_ij`` is gene j's zero-inflated NB in cell i: 0 with probability ``pi[j]``, else NB(mean
    ``rate[j] * depth[i]``, size ``theta[j]``), Poisson where ``theta[j]`` is infinite. Its
    quantile at ``u >= pi`` is the NB quantile of ``(u - pi) / (1 - pi)``.
    """
    n, p = z.shape
    out = np.zeros((n, p), dtype=np.float32)
    for i in range(n):
        for j in range(p):
            u = 0.5 * math.erfc(-z[i, j] / math.sqrt(2.0))
            if pi[j] < 1.0 and u >= pi[j]:
                mean = rate[j] * depth[i]
                out[i, j] = count_inverse((u - pi[j]) / (1.0 - pi[j]), mean, theta[j])
    return out
