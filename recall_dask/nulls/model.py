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
from recall_dask.nulls.depth import DepthBins
from recall_dask.nulls.marginals import (
    CountMarginal,
    GaussianMarginal,
    Marginal,
    fit_nb_theta,
    fit_zip_depth,
    fit_zip_moments,
)
from recall_dask.progress import compute

STREAM = 0x6E756C6C  # "null": keeps these draws apart from other streams of the same seed
_COPULA = "-copula"
_VALUE_SPAN = 1 << 40  # histogram key = gene * _VALUE_SPAN + count value


@dataclass(frozen=True, eq=False)
class NullModel:
    """Fitted null: per-gene ``marginal``, the Cholesky factor of the copula correlation
    (``None``: independent genes, for count marginals only), and each cell's size factor
    (``None``: the same null in every cell, as the R package; see
    :mod:`recall_dask.nulls.depth`). With ``batches`` (each cell's batch), ``marginal`` is a
    tuple of every batch's marginal, and each cell's artificial genes are drawn from its own
    batch's; the copula is shared. ``method`` is one of ``NULL_METHODS``."""

    method: str
    marginal: Marginal | tuple[Marginal, ...]
    cholesky: np.ndarray | None = None
    size_factors: np.ndarray | None = None
    batches: np.ndarray | None = None

    @property
    def marginals(self) -> tuple[Marginal, ...]:
        """Every batch's marginal (one without batches)."""
        return self.marginal if isinstance(self.marginal, tuple) else (self.marginal,)

    @property
    def n_genes(self) -> int:
        return self.marginals[0].n_genes

    def mean(self) -> np.ndarray:
        """Expected value of each artificial gene in a cell of size factor 1 (batches x genes
        with batches)."""
        return self._per_batch(lambda marginal: marginal.mean())

    def zero_probability(self) -> np.ndarray:
        """Probability that an artificial gene is zero in a cell of size factor 1 (batches x
        genes with batches)."""
        return self._per_batch(lambda marginal: marginal.zero_probability())

    def _per_batch(self, value) -> np.ndarray:
        if self.batches is None:
            return value(self.marginal)
        return np.stack([value(marginal) for marginal in self.marginals])

    def arrays(self) -> dict[str, np.ndarray]:
        """The fit as named arrays, exactly (a checkpoint of the run); see :meth:`from_arrays`."""
        kind = type(self.marginals[0])
        arrays = {
            f.name: np.stack([getattr(m, f.name) for m in self.marginals])
            if self.batches is not None
            else getattr(self.marginal, f.name)
            for f in fields(kind)
        }
        optional = {
            "cholesky": self.cholesky,
            "size_factors": self.size_factors,
            "batches": self.batches,
        }
        arrays |= {name: value for name, value in optional.items() if value is not None}
        return {**arrays, "method": np.array(self.method)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> NullModel:
        """The fit that :meth:`arrays` gave (other entries of ``arrays`` are ignored)."""
        kind = GaussianMarginal if "mu" in arrays else CountMarginal
        batches = arrays.get("batches")
        if batches is None:
            marginal = kind(**{f.name: arrays[f.name] for f in fields(kind)})
        else:
            n_batches = arrays[fields(kind)[0].name].shape[0]
            marginal = tuple(
                kind(**{f.name: arrays[f.name][b] for f in fields(kind)}) for b in range(n_batches)
            )
        return cls(
            str(arrays["method"]),
            marginal,
            arrays.get("cholesky"),
            arrays.get("size_factors"),
            batches,
        )

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
        depth = self._block_cells(block, self.size_factors)
        normals = None
        if self.cholesky is not None:
            normals = correlated_normals(rng, self.cholesky, RNG_BLOCK_ROWS)
        if self.batches is None:
            return self._draw(self.marginal, rng, normals, depth, RNG_BLOCK_ROWS)
        codes = self._block_cells(block, self.batches)
        parts, rows = [], []
        for batch in np.unique(codes):
            members = np.flatnonzero(codes == batch)
            rows.append(members)
            parts.append(
                self._draw(
                    self.marginals[batch],
                    rng,
                    None if normals is None else normals[members],
                    None if depth is None else depth[members],
                    members.size,
                )
            )
        order = np.argsort(np.concatenate(rows), kind="stable")
        return sp.vstack(parts, format="csr")[order]

    @staticmethod
    def _draw(
        marginal: Marginal,
        rng: np.random.Generator,
        normals: np.ndarray | None,
        depth: np.ndarray | None,
        n_rows: int,
    ) -> sp.csr_matrix:
        """Independent draws of ``n_rows`` cells, or the quantiles at copula ``normals``."""
        if normals is None:
            return marginal.draw(rng, n_rows, depth)
        return marginal.quantiles(normals, depth)

    @staticmethod
    def _block_cells(block: int, values: np.ndarray | None) -> np.ndarray | None:
        """An RNG block's cells' entries of a per-cell array (size factors or batches); 0 past
        the last cell."""
        if values is None:
            return None
        first = block * RNG_BLOCK_ROWS
        cells = values[first : first + RNG_BLOCK_ROWS]
        return np.pad(cells, (0, RNG_BLOCK_ROWS - cells.size))


class _Partial(NamedTuple):
    """Sufficient statistics of some rows; ``keys``/``key_counts`` form the value histogram,
    ``bin_totals`` (depth bins x genes) the genes' totals per depth bin and ``scaled`` the
    sums of ``x^2 / s`` over cells of size factor ``s > 0``; each is empty unless the fit
    needs it."""

    n_cells: int
    total: np.ndarray
    total_sq: np.ndarray
    nonzero: np.ndarray
    keys: np.ndarray
    key_counts: np.ndarray
    bin_totals: np.ndarray
    scaled: np.ndarray
    invalid: bool


class _Needs(NamedTuple):
    """What a fit needs from the pass over the counts, beyond the genes' moments, and each
    cell's batch if the statistics are kept per batch."""

    histogram: bool = False
    bins: DepthBins | None = None  # the genes' totals per depth bin
    size_factors: np.ndarray | None = None  # sums of x^2 / s
    batches: np.ndarray | None = None
    n_batches: int = 1


def _cells_partial(csr: sp.csr_matrix, cells: np.ndarray, needs: _Needs) -> _Partial:
    """Statistics of some cells' rows (CSR), ``cells`` their indices among all cells."""
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    genes, values = csr.indices, csr.data
    present = values != 0
    rows, genes, values = rows[present], genes[present], values[present]
    invalid = bool(
        values.size
        and (values.min() < 0 or values.max() >= _VALUE_SPAN or np.any(values != np.floor(values)))
    )
    p = csr.shape[1]
    keys = np.empty(0, dtype=np.int64)
    key_counts = np.empty(0, dtype=np.int64)
    if needs.histogram and not invalid:
        keys, key_counts = np.unique(
            genes.astype(np.int64) * _VALUE_SPAN + values.astype(np.int64), return_counts=True
        )
    bin_totals = np.zeros((0, p))
    if needs.bins is not None:
        n_bins = needs.bins.n_bins
        flat = needs.bins.codes[cells[rows]] * p + genes
        bin_totals = np.bincount(flat, weights=values, minlength=n_bins * p).reshape(n_bins, p)
    scaled = np.zeros((0, p))
    if needs.size_factors is not None:
        factors = needs.size_factors[cells[rows]]  # > 0 where a count is
        squares = np.square(values, dtype=np.float64) / factors
        scaled = np.bincount(genes, weights=squares, minlength=p)
    return _Partial(
        n_cells=csr.shape[0],
        total=np.bincount(genes, weights=values, minlength=p),
        total_sq=np.bincount(genes, weights=np.square(values, dtype=np.float64), minlength=p),
        nonzero=np.bincount(genes, minlength=p),
        keys=keys,
        key_counts=key_counts,
        bin_totals=bin_totals,
        scaled=scaled,
        invalid=invalid,
    )


#: The statistics of each batch (one without batches).
_Statistics = tuple[_Partial, ...]


def _block_statistics(block, first_row: int, needs: _Needs) -> _Statistics:
    """Statistics of one row block (CSR, or anything ``csr_matrix`` accepts) whose first cell
    is ``first_row``, per batch."""
    csr = sp.csr_matrix(block)
    cells = first_row + np.arange(csr.shape[0])
    if needs.batches is None:
        return (_cells_partial(csr, cells, needs),)
    codes = needs.batches[cells]
    members = [np.flatnonzero(codes == batch) for batch in range(needs.n_batches)]
    return tuple(_cells_partial(csr[rows], cells[rows], needs) for rows in members)


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
        bin_totals=sum(q.bin_totals for q in parts),
        scaled=sum(q.scaled for q in parts),
        invalid=any(q.invalid for q in parts),
    )


def _merge_statistics(*parts: _Statistics) -> _Statistics:
    return tuple(_merge_partials(*batch) for batch in zip(*parts, strict=True))


def _blocks_statistics(blocks: list, needs: _Needs) -> _Statistics:
    return _merge_statistics(*(_block_statistics(block, first, needs) for block, first in blocks))


def _gene_statistics(counts: da.Array, needs: _Needs) -> _Statistics:
    """Stream ``counts`` once: per-block statistics merged up a tree, one ``dask.compute``."""
    if counts.ndim != 2 or counts.numblocks[1] != 1:
        raise InputError("counts must be a 2-D (cells x genes) dask array chunked by rows only")
    tree = reduce_row_blocks(counts, _blocks_statistics, _merge_statistics, needs, group=8)
    stats = compute(tree)[0][()]
    if any(batch.invalid for batch in stats):
        raise InputError("counts must be non-negative integers (raw UMI counts)")
    if sum(batch.n_cells for batch in stats) == 0:
        raise InputError("counts has no cells")
    return stats


def _from_moments(n_cells: int, moments: np.ndarray) -> _Partial:
    """The statistics of the count marginals from the genes' sums, sums of squares and
    nonzero counts that the variable-gene pass already made."""
    total, total_sq, nonzero = np.asarray(moments, dtype=np.float64)
    empty = np.empty(0, dtype=np.int64)
    none = np.zeros((0, total.size))
    return _Partial(
        n_cells, total, total_sq, nonzero.astype(np.int64), empty, empty, none, none, False
    )


def _fit_zip(stats: _Partial, bins: DepthBins | None) -> CountMarginal:
    n = stats.n_cells
    if bins is None:
        lam, pi = fit_zip_moments(stats.total / n, 1.0 - stats.nonzero / n)
    else:
        lam, pi = fit_zip_depth(stats.total, stats.nonzero, bins)
    return CountMarginal(rate=lam, pi=pi, theta=np.full_like(lam, np.inf))


def _fit_nb(stats: _Partial, bins: DepthBins | None) -> CountMarginal:
    genes = stats.keys // _VALUE_SPAN
    values = stats.keys % _VALUE_SPAN
    p = stats.total.size
    bounds = np.searchsorted(genes, np.arange(p + 1))
    theta = np.array(
        [
            fit_nb_theta(
                stats.n_cells,
                values[lo:hi],
                stats.key_counts[lo:hi],
                bins,
                None if bins is None else stats.bin_totals[:, j],
            )
            for j, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]
    )
    return CountMarginal(rate=stats.total / _depth_total(stats, bins), pi=np.zeros(p), theta=theta)


def _fit_poisson(stats: _Partial, bins: DepthBins | None) -> CountMarginal:
    rate = stats.total / _depth_total(stats, bins)
    return CountMarginal(rate=rate, pi=np.zeros_like(rate), theta=np.full_like(rate, np.inf))


def _depth_total(stats: _Partial, bins: DepthBins | None) -> float:
    """The sum of the cells' size factors: the number of cells without depth."""
    return stats.n_cells if bins is None else bins.total()


def _fit_gaussian(stats: _Partial, bins: DepthBins | None) -> GaussianMarginal:
    """Mean and standard deviation by maximum likelihood (1/n; mgcv's scale uses 1/(n - 1),
    a negligible difference over thousands of cells). With depth, of ``N(mu s, sd^2 s)`` over
    the cells of positive size factor ``s``: ``mu = sum x / sum s`` (weighted least squares)
    and ``sd^2 = sum (x - mu s)^2 / s / n``."""
    if bins is None:
        mu = stats.total / stats.n_cells
        variance = stats.total_sq / stats.n_cells - mu**2
    else:
        depth, n = bins.total(), bins.cells[bins.size > 0].sum()
        mu = stats.total / depth
        variance = (stats.scaled - 2.0 * mu * stats.total + mu**2 * depth) / n
    return GaussianMarginal(mu=mu, sd=np.sqrt(np.maximum(variance, 0.0)))


_MARGINAL_FITTERS = {
    "zip": _fit_zip,
    "nb": _fit_nb,
    "poisson": _fit_poisson,
    "gaussian": _fit_gaussian,
}


def _needs(
    family: str,
    moments: np.ndarray | None,
    bins: DepthBins | None,
    size_factors: np.ndarray | None,
    batches: np.ndarray | None,
) -> _Needs | None:
    """What the pass over the counts must gather for ``family``, per batch; ``None``: the
    moments suffice.

    The negative binomial needs each gene's histogram (and with depth its totals per depth
    bin), the Gaussian with depth its sums of ``x^2 / s``; the others need only the moments.
    """
    grouped = {}
    if batches is not None:
        grouped = {"batches": batches, "n_batches": int(batches.max()) + 1}
    if family == "nb":
        return _Needs(histogram=True, bins=bins, **grouped)
    if family == "gaussian" and size_factors is not None:
        return _Needs(size_factors=size_factors, **grouped)
    return None if moments is not None else _Needs(**grouped)


def fit_null(
    counts: da.Array,
    method: str = "zip",
    seed: int = 0,
    moments: np.ndarray | None = None,
    size_factors: np.ndarray | None = None,
    batches: np.ndarray | None = None,
) -> NullModel:
    """Fit the null of ``method`` to ``counts`` (cells x HVGs, row-chunked CSR blocks of raw
    counts) in streaming passes; the matrix is never gathered.

    ``seed`` drives the uniforms of the copula fit's randomized transform (copula methods).
    ``moments``, the genes' sums, sums of squares and nonzero counts (3 x HVGs, as
    :func:`~recall_dask.preprocess.scale.column_moments` gives them; with ``batches``, per
    batch: batches x 3 x HVGs), spare the pass over the counts for every marginal but the
    negative binomial, which needs each gene's histogram, and the Gaussian with depth.
    ``size_factors`` (one per cell, mean 1) make the null depth-aware: each cell's artificial
    genes are drawn with its depth (:mod:`recall_dask.nulls.depth`); ``None`` fits R's null,
    the same in every cell. ``batches`` (one batch code ``0..B-1`` per cell) fits every
    marginal within each batch, from the same pass, sums grouped by batch; the copula's
    correlation is pooled over the batches, each cell's normal scores taken under its own
    batch's marginal.
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
    for name, values in (("size_factors", size_factors), ("batches", batches)):
        if values is not None and values.shape != (counts.shape[0],):
            raise InputError(f"{name} has shape {values.shape}, expected ({counts.shape[0]},)")
    bins = None if size_factors is None else DepthBins.of(size_factors)
    needs = _needs(family, moments, bins, size_factors, batches)
    if needs is not None:
        stats = _gene_statistics(counts, needs)
    elif batches is None:
        stats = (_from_moments(counts.shape[0], moments),)
    else:
        n_cells = np.bincount(batches, minlength=moments.shape[0])
        stats = tuple(_from_moments(int(n), m) for n, m in zip(n_cells, moments, strict=True))
    fitter = _MARGINAL_FITTERS[family]
    if batches is None:
        marginal = fitter(stats[0], bins)
    else:
        marginal = tuple(
            fitter(batch, None if bins is None else bins.within(size_factors, batches == b))
            for b, batch in enumerate(stats)
        )
    cholesky = None
    if copula:
        correlation = fit_correlation(counts, marginal, seed, size_factors, batches)
        cholesky = cholesky_factor(correlation)
    return NullModel(method, marginal, cholesky, size_factors, batches)
