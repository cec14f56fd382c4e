"""Per-gene marginal distributions of the artificial genes: their fits, and the draws,
distribution functions and quantiles that the samplers need.

Every count null is one family, a zero-inflated gamma-Poisson mixture: a cell draws
``Poisson(rate * B * G)`` with ``B ~ Bernoulli(1 - pi)`` and ``G ~ Gamma(theta, 1 / theta)``
(``G = 1`` when ``theta`` is infinite). ZIP has ``theta = inf``, NB has ``pi = 0``, Poisson
has both. The Gaussian marginal of ``gaussian-copula`` is ``N(mu, sd^2)`` clipped at 0.

Each marginal is used in two ways: independent draws (the ``zip``, ``nb`` and ``poisson``
nulls), and, for the copula nulls, the randomized probability integral transform of the data
(:meth:`CountMarginal.uniform_scores`) and the quantiles at correlated normal scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import gammaln, lambertw, ndtr

from recall_dask.nulls._kernels import count_cdf_bounds, count_quantiles

_LOG_THETA_BOUNDS = (-20.0, 25.0)


def fit_zip_moments(mean: np.ndarray, zero_fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ZIP ``(lambda, pi)`` by moments, as recall's R ``estimate_zi_poisson``.

    ``g = mean / (1 - r0)``, ``lambda = W0(-g e^-g) + g``, ``pi = 1 - mean / lambda``.
    Matching the mean and the zero fraction is also the maximum-likelihood estimate of the
    intercept-only ZIP that scDesign3 (``zip-copula``) fits: the score equations of ``pi`` and
    ``lambda`` are exactly these two moment equations. Where the solution has ``pi < 0``, the
    MLE is on the boundary ``pi = 0``, which is ``Poisson(mean)``, our fallback below.
    Where R's estimate is NaN or invalid, we return a valid null instead:

    * all-zero gene: ``lambda = 0, pi = 1`` (always 0). R gets ``pi = 0/0 = NaN``, and its
      sampler ``rzipoisson`` then stops with an error.
    * no zeros (``r0 = 0``, e.g. a constant gene): ``Poisson(mean)``. R's W0 root gives
      ``lambda < mean`` and ``pi < 0``, so it samples ``Poisson(lambda)`` with too low a mean.
    * any other ``lambda <= 0`` or ``pi < 0``: ``Poisson(mean)``. E.g. only 0/1 values give
      ``g = 1, lambda = 0`` and R's ``pi = -Inf``, so R's artificial gene is all zero.

    ``pi`` is finally clipped to ``[0, 1]``.
    """
    mean = np.asarray(mean, dtype=np.float64)
    r0 = np.asarray(zero_fraction, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = mean / (1.0 - r0)
        lam = lambertw(-g * np.exp(-g), k=0).real + g
        pi = 1.0 - mean / lam
    poisson = (r0 <= 0) | ~(lam > 0) | ~(pi >= 0)
    lam = np.where(poisson, mean, lam)
    pi = np.where(poisson, 0.0, pi)
    all_zero = mean <= 0
    lam = np.where(all_zero, 0.0, lam)
    pi = np.where(all_zero, 1.0, pi)
    return lam, np.clip(pi, 0.0, 1.0)


def fit_nb_theta(n_cells: int, values: np.ndarray, counts: np.ndarray) -> float:
    """NB size ``theta`` by maximum likelihood, from one gene's histogram of nonzero values.

    ``values``/``counts`` give how many cells hold each nonzero value (zeros are implied by
    ``n_cells``). The mean's MLE is the sample mean, so theta maximizes the profile
    log-likelihood, searched over ``log theta``. The MLE is finite only under overdispersion,
    so a gene whose variance (1/n form) is at most its mean is Poisson (``inf``), as is an
    all-zero gene.
    """
    values = np.asarray(values, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    total = counts @ values
    mu = total / n_cells
    variance = counts @ values**2 / n_cells - mu**2
    if mu <= 0 or variance <= mu:
        return np.inf

    def negative_loglik(log_theta: float) -> float:
        theta = np.exp(log_theta)
        mixing = counts @ (gammaln(values + theta) - gammaln(theta))
        rest = total * np.log(mu / (mu + theta)) - n_cells * theta * np.log1p(mu / theta)
        return -(mixing + rest) / n_cells

    fit = minimize_scalar(
        negative_loglik, bounds=_LOG_THETA_BOUNDS, method="bounded", options={"xatol": 1e-8}
    )
    return float(np.exp(fit.x))


@dataclass(frozen=True, eq=False)
class CountMarginal:
    """Per gene ``Poisson(rate * Bernoulli(1 - pi) * Gamma(theta, 1 / theta))``.

    ``rate``, ``pi`` and ``theta`` are float64 arrays of length p; ``theta = inf`` means no
    gamma mixing.
    """

    rate: np.ndarray
    pi: np.ndarray
    theta: np.ndarray

    @property
    def n_genes(self) -> int:
        return self.rate.size

    def mean(self) -> np.ndarray:
        """Expected count of each gene."""
        return (1.0 - self.pi) * self.rate

    def zero_probability(self) -> np.ndarray:
        """Probability that a gene is zero in a cell."""
        with np.errstate(divide="ignore", invalid="ignore"):
            nb_zero = np.exp(-self.theta * np.log1p(self.rate / self.theta))
        poisson_zero = np.exp(-self.rate)
        return self.pi + (1.0 - self.pi) * np.where(np.isinf(self.theta), poisson_zero, nb_zero)

    def point_mass(self) -> np.ndarray:
        """Genes that are always zero."""
        return self.zero_probability() >= 1.0

    def cdf_bounds(self, x: np.ndarray, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(P(X_g <= x - 1), P(X_g <= x))`` for counts ``x >= 0`` of genes ``genes``."""
        x = np.asarray(x, dtype=np.int64)
        genes = np.asarray(genes, dtype=np.int64)
        return count_cdf_bounds(x, genes, self.rate, self.pi, self.theta)

    def draw(self, rng: np.random.Generator, n_rows: int) -> sp.csr_matrix:
        """Independent counts of ``n_rows`` cells (float32 CSR); Poisson draws only where the
        rate can be positive."""
        active = np.broadcast_to(self.rate > 0, (n_rows, self.n_genes)).copy()
        inflated = np.flatnonzero(self.pi > 0)
        if inflated.size:
            active[:, inflated] &= rng.random((n_rows, inflated.size)) >= self.pi[inflated]
        rows, genes = np.nonzero(active)
        rate = self.rate[genes]
        theta = self.theta[genes]
        mixed = np.isfinite(theta)
        if mixed.any():
            rate[mixed] *= rng.gamma(theta[mixed], 1.0 / theta[mixed])
        values = rng.poisson(rate)
        keep = values > 0
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows[keep], minlength=n_rows), out=indptr[1:])
        return sp.csr_matrix(
            (values[keep].astype(np.float32), genes[keep], indptr), shape=(n_rows, self.n_genes)
        )

    def uniform_scores(self, counts: sp.csr_matrix, v: np.ndarray) -> np.ndarray:
        """Randomized probability integral transform (dense, rows x genes) of ``counts``:
        ``u = F(x - 1) + v (F(x) - F(x - 1))`` with uniforms ``v`` of the same shape, so ``u``
        is exactly uniform under the marginal (scDesign3's transform of discrete data)."""
        u = v * self.zero_probability()  # x = 0: F(-1) = 0
        coo = sp.coo_matrix(counts)
        present = coo.data != 0
        rows, genes = coo.row[present], coo.col[present]
        lower, upper = self.cdf_bounds(coo.data[present], genes)
        u[rows, genes] = lower + v[rows, genes] * (upper - lower)
        return u

    def quantiles(self, z: np.ndarray) -> sp.csr_matrix:
        """Counts (float32 CSR) at standard normal scores ``z``: ``F^-1(Phi(z))`` per gene."""
        dense = count_quantiles(np.ascontiguousarray(z), self.rate, self.pi, self.theta)
        return sp.csr_matrix(dense)


@dataclass(frozen=True, eq=False)
class GaussianMarginal:
    """Per gene ``max(N(mu, sd^2), 0)``: scDesign3's Gaussian marginal, clipped at 0.

    With ``nonnegative = FALSE`` (recall's setting) R keeps negative values, and Seurat's
    LogNormalize then takes log1p of negative normalized values, which is NaN below -1 (and
    a library size can even be negative). We clip at 0, the smallest count, on purpose.
    """

    mu: np.ndarray
    sd: np.ndarray

    @property
    def n_genes(self) -> int:
        return self.mu.size

    def _mu_over_sd(self) -> np.ndarray:
        return self.mu / np.where(self.sd > 0, self.sd, 1.0)

    def mean(self) -> np.ndarray:
        """Expected value after clipping: ``mu Phi(mu / sd) + sd phi(mu / sd)``."""
        t = self._mu_over_sd()
        clipped = self.mu * ndtr(t) + self.sd * np.exp(-0.5 * t**2) / np.sqrt(2 * np.pi)
        return np.where(self.sd > 0, clipped, np.maximum(self.mu, 0.0))

    def zero_probability(self) -> np.ndarray:
        """``P(N(mu, sd^2) <= 0)``; a constant gene is zero only if its mean is."""
        return np.where(self.sd > 0, ndtr(-self._mu_over_sd()), (self.mu <= 0).astype(float))

    def point_mass(self) -> np.ndarray:
        """Constant genes."""
        return ~(self.sd > 0)

    def uniform_scores(self, counts: sp.csr_matrix, v: np.ndarray) -> np.ndarray:
        """``Phi((x - mu) / sd)``: no randomization for a continuous marginal (``v`` is unused),
        as in scDesign3; NaN for constant genes."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return ndtr((sp.csr_matrix(counts).toarray() - self.mu) / self.sd)

    def quantiles(self, z: np.ndarray) -> sp.csr_matrix:
        """Values ``max(mu + sd z, 0)`` (float32 CSR) at standard normal scores ``z``."""
        return sp.csr_matrix(np.maximum(self.mu + self.sd * z, 0.0).astype(np.float32))


Marginal = CountMarginal | GaussianMarginal
