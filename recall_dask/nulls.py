"""Null models for the artificial genes of recall, fitted in one streaming pass and sampled
reproducibly per row chunk.

Every null is written as one family, a zero-inflated gamma-Poisson mixture: a cell draws
``Poisson(rate * B * G)`` with ``B ~ Bernoulli(1 - pi)`` and ``G ~ Gamma(theta, 1 / theta)``
(``G = 1`` when ``theta`` is infinite). The ZIP null has ``theta = inf``; the NB null has
``pi = 0``. One sampler then serves every method, and a method only decides how the three
per-gene arrays are fitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import gammaln, lambertw

from recall_dask.errors import InputError
from recall_dask.progress import compute

NULL_METHODS = ("zip", "nb")
STREAM = 0x6E756C6C  # "null": keeps these draws apart from other streams of the same seed
RNG_BLOCK_ROWS = 1024  # cells per RNG block, in absolute row coordinates
_MERGE_FAN_IN = 8
_VALUE_SPAN = 1 << 40  # histogram key = gene * _VALUE_SPAN + count value
_LOG_THETA_BOUNDS = (-20.0, 25.0)


@dataclass(frozen=True, eq=False)
class NullModel:
    """Fitted per-gene null: ``Poisson(rate * Bernoulli(1 - pi) * Gamma(theta, 1 / theta))``.

    ``method`` names the fit (one of ``NULL_METHODS``); ``rate``, ``pi`` and ``theta`` are
    float64 arrays of length p, with ``theta = inf`` meaning no gamma mixing.
    """

    method: str
    rate: np.ndarray
    pi: np.ndarray
    theta: np.ndarray

    @property
    def n_genes(self) -> int:
        return self.rate.size

    def mean(self) -> np.ndarray:
        """Expected count of each artificial gene."""
        return (1.0 - self.pi) * self.rate

    def zero_probability(self) -> np.ndarray:
        """Probability that an artificial gene is zero in a cell."""
        with np.errstate(divide="ignore", invalid="ignore"):
            nb_zero = np.exp(-self.theta * np.log1p(self.rate / self.theta))
        poisson_zero = np.exp(-self.rate)
        return self.pi + (1.0 - self.pi) * np.where(np.isinf(self.theta), poisson_zero, nb_zero)

    def sample(self, row_start: int, n_rows: int, seed: int) -> sp.csr_matrix:
        """Artificial counts (float32 CSR, ``n_rows x p``) of cells ``row_start ..``.

        Draws come from fixed blocks of ``RNG_BLOCK_ROWS`` cells, each seeded by
        ``(seed, STREAM, block index)``, so a cell's values do not depend on the chunking.
        """
        if n_rows == 0:
            return sp.csr_matrix((0, self.n_genes), dtype=np.float32)
        first = row_start // RNG_BLOCK_ROWS
        last = -(-(row_start + n_rows) // RNG_BLOCK_ROWS)
        blocks = sp.vstack([self._block(b, seed) for b in range(first, last)], format="csr")
        offset = row_start - first * RNG_BLOCK_ROWS
        return blocks[offset : offset + n_rows]

    def _block(self, block: int, seed: int) -> sp.csr_matrix:
        """Counts of RNG block ``block``; Poisson draws only where the rate can be positive."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM, block]))
        active = np.broadcast_to(self.rate > 0, (RNG_BLOCK_ROWS, self.n_genes)).copy()
        inflated = np.flatnonzero(self.pi > 0)
        if inflated.size:
            active[:, inflated] &= rng.random((RNG_BLOCK_ROWS, inflated.size)) >= self.pi[inflated]
        rows, genes = np.nonzero(active)
        rate = self.rate[genes]
        theta = self.theta[genes]
        mixed = np.isfinite(theta)
        if mixed.any():
            rate[mixed] *= rng.gamma(theta[mixed], 1.0 / theta[mixed])
        values = rng.poisson(rate)
        keep = values > 0
        indptr = np.zeros(RNG_BLOCK_ROWS + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows[keep], minlength=RNG_BLOCK_ROWS), out=indptr[1:])
        return sp.csr_matrix(
            (values[keep].astype(np.float32), genes[keep], indptr),
            shape=(RNG_BLOCK_ROWS, self.n_genes),
        )


def fit_zip_moments(mean: np.ndarray, zero_fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ZIP ``(lambda, pi)`` by moments, as recall's R ``estimate_zi_poisson``.

    ``g = mean / (1 - r0)``, ``lambda = W0(-g e^-g) + g``, ``pi = 1 - mean / lambda``.
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


class _Partial(NamedTuple):
    """Sufficient statistics of some rows; ``keys``/``key_counts`` form the value histogram."""

    n_cells: int
    total: np.ndarray
    nonzero: np.ndarray
    keys: np.ndarray
    key_counts: np.ndarray
    invalid: bool


def _block_partial(block, with_histogram: bool) -> _Partial:
    """Statistics of one row block (CSR, or anything ``csr_matrix`` accepts)."""
    csr = sp.csr_matrix(block)
    genes, values = csr.indices, csr.data
    present = values != 0
    genes, values = genes[present], values[present]
    invalid = bool(
        values.size
        and (values.min() < 0 or values.max() >= _VALUE_SPAN or np.any(values != np.floor(values)))
    )
    p = csr.shape[1]
    keys = np.empty(0, dtype=np.int64)
    key_counts = np.empty(0, dtype=np.int64)
    if with_histogram and not invalid:
        keys, key_counts = np.unique(
            genes.astype(np.int64) * _VALUE_SPAN + values.astype(np.int64), return_counts=True
        )
    return _Partial(
        n_cells=csr.shape[0],
        total=np.bincount(genes, weights=values, minlength=p),
        nonzero=np.bincount(genes, minlength=p),
        keys=keys,
        key_counts=key_counts,
        invalid=invalid,
    )


def _merge_partials(*parts: _Partial) -> _Partial:
    keys, inverse = np.unique(np.concatenate([q.keys for q in parts]), return_inverse=True)
    key_counts = np.bincount(inverse, weights=np.concatenate([q.key_counts for q in parts]))
    return _Partial(
        n_cells=sum(q.n_cells for q in parts),
        total=sum(q.total for q in parts),
        nonzero=sum(q.nonzero for q in parts),
        keys=keys,
        key_counts=key_counts.astype(np.int64),
        invalid=any(q.invalid for q in parts),
    )


def _gene_statistics(counts: da.Array, with_histogram: bool) -> _Partial:
    """Stream ``counts`` once: per-block statistics merged in a tree, one ``dask.compute``."""
    if counts.ndim != 2 or counts.numblocks[1] != 1:
        raise InputError("counts must be a 2-D (cells x genes) dask array chunked by rows only")
    parts = [
        dask.delayed(_block_partial)(block, with_histogram) for block in counts.to_delayed().ravel()
    ]
    while len(parts) > 1:
        parts = [
            dask.delayed(_merge_partials)(*parts[i : i + _MERGE_FAN_IN])
            for i in range(0, len(parts), _MERGE_FAN_IN)
        ]
    (stats,) = compute(parts[0])
    if stats.invalid:
        raise InputError("counts must be non-negative integers (raw UMI counts)")
    if stats.n_cells == 0:
        raise InputError("counts has no cells")
    return stats


def _fit_zip(stats: _Partial) -> NullModel:
    n = stats.n_cells
    lam, pi = fit_zip_moments(stats.total / n, 1.0 - stats.nonzero / n)
    return NullModel("zip", rate=lam, pi=pi, theta=np.full_like(lam, np.inf))


def _fit_nb(stats: _Partial) -> NullModel:
    genes = stats.keys // _VALUE_SPAN
    values = stats.keys % _VALUE_SPAN
    p = stats.total.size
    bounds = np.searchsorted(genes, np.arange(p + 1))
    theta = np.array(
        [
            fit_nb_theta(stats.n_cells, values[lo:hi], stats.key_counts[lo:hi])
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    )
    rate = stats.total / stats.n_cells
    return NullModel("nb", rate=rate, pi=np.zeros(p), theta=theta)


_FITTERS = {"zip": _fit_zip, "nb": _fit_nb}


def fit_null(counts: da.Array, method: str = "zip") -> NullModel:
    """Fit the per-gene null of ``method`` to ``counts`` (cells x HVGs, row-chunked CSR blocks
    of raw counts) in one streaming pass; the matrix is never gathered.
    """
    if method not in _FITTERS:
        raise InputError(f"unknown null method {method!r}; choose one of {', '.join(NULL_METHODS)}")
    stats = _gene_statistics(counts, with_histogram=method == "nb")
    return _FITTERS[method](stats)


def _sample_chunk(span: np.ndarray, model: NullModel, seed: int) -> sp.csr_matrix:
    row_start, n_rows = (int(v) for v in span[0])
    return model.sample(row_start, n_rows, seed)


def artificial_genes(model: NullModel, n_cells_chunks: tuple[int, ...], seed: int) -> da.Array:
    """Lazy ``(N, p)`` array of artificial counts (float32 CSR blocks) with the given row chunks.

    Block values equal ``model.sample`` on the block's rows, so they are the same for any
    chunking and any scheduler.
    """
    sizes = np.asarray(n_cells_chunks, dtype=np.int64)
    if sizes.size == 0 or np.any(sizes < 0):
        raise InputError("n_cells_chunks must be a non-empty tuple of non-negative sizes")
    spans = np.stack([np.cumsum(sizes) - sizes, sizes], axis=1)
    return da.map_blocks(
        _sample_chunk,
        da.from_array(spans, chunks=(1, 2)),
        dask.delayed(model, traverse=False),
        seed,
        chunks=(tuple(int(s) for s in sizes), (model.n_genes,)),
        dtype=np.float32,
        meta=sp.csr_matrix((0, 0), dtype=np.float32),
    )
