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
from scipy.special import gammaln, lambertw, ndtr, xlogy

from recall_dask.nulls._kernels import count_cdf_bounds, count_quantiles
from recall_dask.nulls.depth import DepthBins

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


def fit_zip_depth(
    total: np.ndarray, nonzero: np.ndarray, bins: DepthBins
) -> tuple[np.ndarray, np.ndarray]:
    """ZIP ``(lambda, pi)`` of genes whose mean in cell i is ``(1 - pi) lambda s_i``, matching
    each gene's total count and its number of zeros over all cells, as
    :func:`fit_zip_moments` does when every ``s_i`` is 1.

    The total gives ``1 - pi = total / (lambda S)`` (``S`` the sum of the size factors), so
    the zeros leave one equation in ``lambda``:
    ``sum_i (1 - exp(-lambda s_i)) / lambda = nonzero S / total``. Its left side falls from
    ``S`` to 0 as ``lambda`` grows, so the root is unique; it is found by bisection in log
    ``lambda``, for all genes at once, over the depth ``bins``. Where it lies below
    ``total / S`` (fewer zeros than a Poisson gene of the same mean would have), ``pi`` would be
    negative and the fit is ``Poisson`` with depth; degenerate genes get the nulls of
    :func:`fit_zip_moments`.
    """
    total = np.asarray(total, dtype=np.float64)
    nonzero = np.asarray(nonzero, dtype=np.float64)
    n_cells, depth = float(bins.cells.sum()), bins.total()
    mean = total / depth
    zero_inflated = (nonzero > 0) & (nonzero < n_cells) & (total > nonzero)
    with np.errstate(divide="ignore", invalid="ignore"):
        target = np.where(zero_inflated, nonzero * depth / total, 0.0)
        low = np.log(np.where(zero_inflated, mean, 1.0))
        high = np.log(np.where(zero_inflated, total / nonzero, 1.0))

    def detected(log_lam: np.ndarray) -> np.ndarray:
        """``sum_i (1 - exp(-lambda s_i)) / lambda`` for each gene."""
        lam = np.exp(log_lam)
        return (-np.expm1(-np.outer(lam, bins.size)) @ bins.cells) / lam

    zero_inflated &= detected(low) > target
    for _ in range(64):
        middle = 0.5 * (low + high)
        below = detected(middle) > target  # the root lies above middle
        low, high = np.where(below, middle, low), np.where(below, high, middle)
    lam = np.where(zero_inflated, np.exp(0.5 * (low + high)), mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        pi = np.where(zero_inflated, 1.0 - mean / lam, 0.0)
    all_zero = total <= 0
    return np.where(all_zero, 0.0, lam), np.where(all_zero, 1.0, np.clip(pi, 0.0, 1.0))


def fit_nb_theta(
    n_cells: int,
    values: np.ndarray,
    counts: np.ndarray,
    bins: DepthBins | None = None,
    bin_totals: np.ndarray | None = None,
) -> float:
    """NB size ``theta`` by maximum likelihood, from one gene's histogram of nonzero values.

    ``values``/``counts`` give how many cells hold each nonzero value (zeros are implied by
    ``n_cells``). Without ``bins`` every cell has the same mean, the sample mean, which is its
    MLE, and theta maximizes the profile log-likelihood, searched over ``log theta``. With
    depth ``bins`` and the gene's total count in each (``bin_totals``), the mean in cell i is
    ``mu s_i``, ``mu`` the gene's total over the sum of the size factors, and the likelihood
    takes each bin's cells at the bin's size factor. The MLE is finite only under
    overdispersion, so a gene whose squared deviations from its means add up to at most their
    sum (without bins: variance in 1/n form at most the mean) is Poisson (``inf``), as is an
    all-zero gene.
    """
    values = np.asarray(values, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if bins is None:
        cells, size, bin_totals = (
            np.array([float(n_cells)]),
            np.ones(1),
            np.array([counts @ values]),
        )
    else:
        cells, size = bins.cells.astype(np.float64), bins.size
    total = float(np.sum(bin_totals))
    mu = total / (cells @ size)
    expected = mu * size  # a cell's mean count, in each bin
    squares = counts @ values**2 - 2.0 * mu * (size @ bin_totals) + mu * expected @ (cells * size)
    if mu <= 0 or squares <= total:
        return np.inf

    def negative_loglik(log_theta: float) -> float:
        theta = np.exp(log_theta)
        mixing = counts @ (gammaln(values + theta) - gammaln(theta))
        rest = np.sum(xlogy(bin_totals, expected / (expected + theta)))
        rest -= theta * (cells @ np.log1p(expected / theta))
        return -(mixing + rest) / n_cells

    fit = minimize_scalar(
        negative_loglik, bounds=_LOG_THETA_BOUNDS, method="bounded", options={"xatol": 1e-8}
    )
    return float(np.exp(fit.x))


@dataclass(frozen=True, eq=False)
class CountMarginal:
    """Per gene ``Poisson(rate * Bernoulli(1 - pi) * Gamma(theta, 1 / theta))``.

    ``rate``, ``pi`` and ``theta`` are float64 arrays of length p; ``theta = inf`` means no
    gamma mixing. Every method takes an optional ``depth``, the size factor of each cell
    (row) concerned: the rate of gene j in cell i is then ``rate[j] * depth[i]``
    (:mod:`recall_dask.nulls.depth`); without it, every cell's rate is ``rate``.
    """

    rate: np.ndarray
    pi: np.ndarray
    theta: np.ndarray

    @property
    def n_genes(self) -> int:
        return self.rate.size

    def mean(self) -> np.ndarray:
        """Expected count of each gene in a cell of size factor 1."""
        return (1.0 - self.pi) * self.rate

    def zero_probability(self, depth: np.ndarray | None = None) -> np.ndarray:
        """Probability that a gene is zero in a cell: per gene, or cells x genes with
        ``depth``."""
        rate = self.rate if depth is None else np.outer(depth, self.rate)
        with np.errstate(divide="ignore", invalid="ignore"):
            nb_zero = np.exp(-self.theta * np.log1p(rate / self.theta))
        poisson_zero = np.exp(-rate)
        return self.pi + (1.0 - self.pi) * np.where(np.isinf(self.theta), poisson_zero, nb_zero)

    def point_mass(self) -> np.ndarray:
        """Genes that are always zero."""
        return self.zero_probability() >= 1.0

    def cdf_bounds(
        self, x: np.ndarray, genes: np.ndarray, depth: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(P(X_g <= x - 1), P(X_g <= x))`` for counts ``x >= 0`` of genes ``genes``, in cells
        of size factors ``depth`` (one per count)."""
        x = np.asarray(x, dtype=np.int64)
        genes = np.asarray(genes, dtype=np.int64)
        depth = np.ones(x.size) if depth is None else np.asarray(depth, dtype=np.float64)
        return count_cdf_bounds(x, genes, depth, self.rate, self.pi, self.theta)

    def draw(
        self, rng: np.random.Generator, n_rows: int, depth: np.ndarray | None = None
    ) -> sp.csr_matrix:
        """Independent counts of ``n_rows`` cells (float32 CSR); Poisson draws only where the
        rate can be positive. The random stream does not depend on ``depth``."""
        active = np.broadcast_to(self.rate > 0, (n_rows, self.n_genes)).copy()
        inflated = np.flatnonzero(self.pi > 0)
        if inflated.size:
            active[:, inflated] &= rng.random((n_rows, inflated.size)) >= self.pi[inflated]
        rows, genes = np.nonzero(active)
        rate = self.rate[genes]
        if depth is not None:
            rate *= depth[rows]
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

    def uniform_scores(
        self, counts: sp.csr_matrix, v: np.ndarray, depth: np.ndarray | None = None
    ) -> np.ndarray:
        """Randomized probability integral transform (dense, rows x genes) of ``counts``:
        ``u = F(x - 1) + v (F(x) - F(x - 1))`` with uniforms ``v`` of the same shape, so ``u``
        is exactly uniform under the marginal (scDesign3's transform of discrete data)."""
        u = v * self.zero_probability(depth)  # x = 0: F(-1) = 0
        coo = sp.coo_matrix(counts)
        present = coo.data != 0
        rows, genes = coo.row[present], coo.col[present]
        lower, upper = self.cdf_bounds(
            coo.data[present], genes, None if depth is None else depth[rows]
        )
        u[rows, genes] = lower + v[rows, genes] * (upper - lower)
        return u

    def quantiles(self, z: np.ndarray, depth: np.ndarray | None = None) -> sp.csr_matrix:
        """Counts (float32 CSR) at standard normal scores ``z``: ``F^-1(Phi(z))`` per gene."""
        depth = np.ones(z.shape[0]) if depth is None else np.asarray(depth, dtype=np.float64)
        dense = count_quantiles(np.ascontiguousarray(z), depth, self.rate, self.pi, self.theta)
        return sp.csr_matrix(dense)


@dataclass(frozen=True, eq=False)
class GaussianMarginal:
    """Per gene ``max(N(mu, sd^2), 0)``: scDesign3's Gaussian marginal, clipped at 0.

    With ``nonnegative = FALSE`` (recall's setting) R keeps negative values, and Seurat's
    LogNormalize then takes log1p of negative normalized values, which is NaN below -1 (and
    a library size can even be negative). We clip at 0, the smallest count, on purpose.
    With ``depth``, a cell of size factor ``s`` has ``max(N(mu s, sd^2 s), 0)``: mean and
    variance grow with depth as a Poisson count's do, so its chance of a zero falls with depth
    as a real gene's does (an empty cell's values are 0).
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

    def uniform_scores(
        self, counts: sp.csr_matrix, v: np.ndarray, depth: np.ndarray | None = None
    ) -> np.ndarray:
        """``Phi((x - mu) / sd)``: no randomization for a continuous marginal (``v`` is unused),
        as in scDesign3; NaN for constant genes, 1/2 in empty cells."""
        values = sp.csr_matrix(counts).toarray()
        if depth is None:
            with np.errstate(divide="ignore", invalid="ignore"):
                return ndtr((values - self.mu) / self.sd)
        root = np.sqrt(depth)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = ndtr((values - self.mu * depth[:, None]) / (self.sd * root))
        return np.where(root > 0, u, 0.5)

    def quantiles(self, z: np.ndarray, depth: np.ndarray | None = None) -> sp.csr_matrix:
        """Values ``max(mu + sd z, 0)`` (float32 CSR) at standard normal scores ``z``; with
        ``depth``, ``max(mu s + sd sqrt(s) z, 0)``."""
        if depth is None:
            values = self.mu + self.sd * z
        else:
            values = self.mu * depth[:, None] + self.sd * np.sqrt(depth)[:, None] * z
        return sp.csr_matrix(np.maximum(values, 0.0).astype(np.float32))


Marginal = CountMarginal | GaussianMarginal
