"""Null models of the artificial genes: fitted to the variable genes' counts in streaming
passes, and sampled reproducibly per row chunk.

The seven methods of recall's R package (``--null-method``):

* ``zip``, ``nb``, ``poisson``: every artificial gene drawn independently from its own
  marginal: zero-inflated Poisson by moments (= maximum likelihood), negative binomial by
  maximum likelihood, Poisson with the gene's mean.
* ``zip-copula``, ``nb-copula``, ``poisson-copula``, ``gaussian-copula``: the same marginals
  (Gaussian: the gene's mean and ML standard deviation), tied together by a Gaussian copula
  fitted to the data, as R's scDesign3 call does (:mod:`recall_dask.nulls.copula`).

One pass over the counts gives the per-gene statistics of the marginals; a copula needs a
second pass, for the correlation of the normal scores. Sampling draws fixed blocks of
``RNG_BLOCK_ROWS`` absolute rows, so the artificial genes do not depend on the chunking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import NamedTuple

import dask.array as da
import numpy as np
import scipy.sparse as sp

from recall_dask import config
from recall_dask._chunks import RNG_BLOCK_ROWS, reduce_row_blocks, rng_block_spans
from recall_dask.choices import NULL_METHODS
from recall_dask.errors import InputError
from recall_dask.nulls.copula import (
    cholesky_factor,
    correlated_normals,
    fit_correlation,
)
from recall_dask.nulls.marginals import (
    CountMarginal,
    GaussianMarginal,
    Marginal,
    fit_nb_theta,
    fit_zip_moments,
)
from recall_dask.progress import compute

STREAM = 0x6E756C6C  # "null": keeps these draws apart from other streams of the same seed
_COPULA = "-copula"
_VALUE_SPAN = 1 << 40  # histogram key = gene * _VALUE_SPAN + count value


@dataclass(frozen=True, eq=False)
class NullModel:
    """Fitted null: per-gene ``marginal``, and the Cholesky factor of the copula correlation
    (``None``: independent genes, for count marginals only). ``method`` is one of
    ``NULL_METHODS``."""

    method: str
    marginal: Marginal
    cholesky: np.ndarray | None = None

    @property
    def n_genes(self) -> int:
        return self.marginal.n_genes

    def mean(self) -> np.ndarray:
        """Expected value of each artificial gene."""
        return self.marginal.mean()

    def zero_probability(self) -> np.ndarray:
        """Probability that an artificial gene is zero in a cell."""
        return self.marginal.zero_probability()

    def arrays(self) -> dict[str, np.ndarray]:
        """The fit as named arrays, exactly (a checkpoint of the run); see :meth:`from_arrays`."""
        arrays = {f.name: getattr(self.marginal, f.name) for f in fields(self.marginal)}
        if self.cholesky is not None:
            arrays["cholesky"] = self.cholesky
        return {**arrays, "method": np.array(self.method)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> NullModel:
        """The fit that :meth:`arrays` gave (other entries of ``arrays`` are ignored)."""
        kind = GaussianMarginal if "mu" in arrays else CountMarginal
        marginal = kind(**{f.name: arrays[f.name] for f in fields(kind)})
        return cls(str(arrays["method"]), marginal, arrays.get("cholesky"))

    def sample(self, row_start: int, n_rows: int, seed: int) -> sp.csr_matrix:
        """Artificial genes (float32 CSR, ``n_rows x p``) of cells ``row_start ..``.

        Draws come from fixed blocks of ``RNG_BLOCK_ROWS`` cells, each seeded by
        ``(seed, STREAM, block index)``, so a cell's values do not depend on the chunking.
        """
        if n_rows == 0:
            return sp.csr_matrix((0, self.n_genes), dtype=np.float32)
        spans = rng_block_spans(row_start, n_rows)
        return sp.vstack([self._block(b, seed)[lo:hi] for b, lo, hi in spans], format="csr")

    def _block(self, block: int, seed: int) -> sp.csr_matrix:
        rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM, block]))
        if self.cholesky is None:
            return self.marginal.draw(rng, RNG_BLOCK_ROWS)
        return self.marginal.quantiles(correlated_normals(rng, self.cholesky, RNG_BLOCK_ROWS))


class _Partial(NamedTuple):
    """Sufficient statistics of some rows; ``keys``/``key_counts`` form the value histogram."""

    n_cells: int
    total: np.ndarray
    total_sq: np.ndarray
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
        total_sq=np.bincount(genes, weights=np.square(values, dtype=np.float64), minlength=p),
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
        total_sq=sum(q.total_sq for q in parts),
        nonzero=sum(q.nonzero for q in parts),
        keys=keys,
        key_counts=key_counts.astype(np.int64),
        invalid=any(q.invalid for q in parts),
    )


def _blocks_partial(blocks: list, with_histogram: bool) -> _Partial:
    return _merge_partials(*(_block_partial(block, with_histogram) for block, _ in blocks))


def _gene_statistics(counts: da.Array, with_histogram: bool) -> _Partial:
    """Stream ``counts`` once: per-block statistics merged up a tree, one ``dask.compute``."""
    if counts.ndim != 2 or counts.numblocks[1] != 1:
        raise InputError("counts must be a 2-D (cells x genes) dask array chunked by rows only")
    tree = reduce_row_blocks(counts, _blocks_partial, _merge_partials, with_histogram, group=8)
    stats = compute(tree)[0][()]
    if stats.invalid:
        raise InputError("counts must be non-negative integers (raw UMI counts)")
    if stats.n_cells == 0:
        raise InputError("counts has no cells")
    return stats


def _from_moments(n_cells: int, moments: np.ndarray) -> _Partial:
    """The statistics of the count marginals from the genes' sums, sums of squares and
    nonzero counts that the variable-gene pass already made."""
    total, total_sq, nonzero = np.asarray(moments, dtype=np.float64)
    empty = np.empty(0, dtype=np.int64)
    return _Partial(n_cells, total, total_sq, nonzero.astype(np.int64), empty, empty, False)


def _fit_zip(stats: _Partial) -> CountMarginal:
    n = stats.n_cells
    lam, pi = fit_zip_moments(stats.total / n, 1.0 - stats.nonzero / n)
    return CountMarginal(rate=lam, pi=pi, theta=np.full_like(lam, np.inf))


def _fit_nb(stats: _Partial) -> CountMarginal:
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
    return CountMarginal(rate=stats.total / stats.n_cells, pi=np.zeros(p), theta=theta)


def _fit_poisson(stats: _Partial) -> CountMarginal:
    rate = stats.total / stats.n_cells
    return CountMarginal(rate=rate, pi=np.zeros_like(rate), theta=np.full_like(rate, np.inf))


def _fit_gaussian(stats: _Partial) -> GaussianMarginal:
    """Mean and standard deviation by maximum likelihood (1/n; mgcv's scale uses 1/(n - 1),
    a negligible difference over thousands of cells)."""
    mu = stats.total / stats.n_cells
    variance = np.maximum(stats.total_sq / stats.n_cells - mu**2, 0.0)
    return GaussianMarginal(mu=mu, sd=np.sqrt(variance))


_MARGINAL_FITTERS = {
    "zip": _fit_zip,
    "nb": _fit_nb,
    "poisson": _fit_poisson,
    "gaussian": _fit_gaussian,
}


def fit_null(
    counts: da.Array, method: str = "zip", seed: int = 0, moments: np.ndarray | None = None
) -> NullModel:
    """Fit the null of ``method`` to ``counts`` (cells x HVGs, row-chunked CSR blocks of raw
    counts) in streaming passes; the matrix is never gathered.

    ``seed`` drives the uniforms of the copula fit's randomized transform (copula methods).
    ``moments``, the genes' sums, sums of squares and nonzero counts (3 x HVGs, as
    :func:`~recall_dask.preprocess.scale.column_moments` gives them), spare the pass over the
    counts for every marginal but the negative binomial, which needs each gene's histogram.
    """
    if method not in NULL_METHODS:
        raise InputError(f"unknown null method {method!r}; choose one of {', '.join(NULL_METHODS)}")
    family = method.removesuffix(_COPULA)
    copula = family != method
    max_genes = config.get("copula-max-genes")
    if copula and counts.shape[1] > max_genes:
        raise InputError(
            f"copula nulls support at most {max_genes} variable genes (got "
            f"{counts.shape[1]}): their correlation is a dense p x p matrix; lower --n-hvg or "
            "choose an independent null"
        )
    if family == "nb" or moments is None:
        stats = _gene_statistics(counts, with_histogram=family == "nb")
    else:
        stats = _from_moments(counts.shape[0], moments)
    marginal = _MARGINAL_FITTERS[family](stats)
    if not copula:
        return NullModel(method, marginal)
    correlation = fit_correlation(counts, marginal, seed)
    return NullModel(method, marginal, cholesky_factor(correlation))
