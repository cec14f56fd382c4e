"""The sequencing depth that depth-aware nulls give each artificial gene, and its summary for
the fits.

Real genes carry their cell's depth: a cell sequenced twice as deep has about twice the counts
of every gene, and after LogNormalize its detection rates and the compression of log1p still
show it. A null fitted to all cells alike gives every cell's artificial twin the same
distribution, so the twins carry no depth; a clustering that splits cells by depth then finds
real genes that beat their twins, and certifies depth as cell types. The R package's nulls
are such nulls.

The depth-aware nulls (``--depth cell``) model gene j in cell i with mean ``rate_j * s_i``,
where the size factor ``s_i`` is cell i's depth over the mean cell's (its count outside the
variable genes; :mod:`recall_dask.preprocess.depth`), and draw cell i's twin with that
mean. Each marginal keeps its own form (zero inflation,
overdispersion); only its mean scales with the cell. With every ``s_i = 1`` they are R's
nulls.

The fits need the size factors only through sums over cells. Where a sum couples a cell's
size factor with a gene's count inside a nonlinear function (the negative binomial
likelihood, the zero probabilities of the ZIP), the cells are grouped in narrow bins of log
size factor (:class:`DepthBins`), each standing for its cells at their mean size factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Bins of log size factor: each spans 1/64 of the range, a few percent of depth in real data.
N_BINS = 64


@dataclass(frozen=True, eq=False)
class DepthBins:
    """Cells grouped by size factor: ``codes[i]`` is cell i's bin, ``size[b]`` the mean size
    factor of bin b's cells and ``cells[b]`` their number.

    Bins are equal steps of log size factor between the smallest and largest positive one;
    empty cells (size factor 0) have a bin of their own. Equal size factors give one bin.
    """

    codes: np.ndarray
    size: np.ndarray
    cells: np.ndarray

    @classmethod
    def of(cls, factors: np.ndarray, n_bins: int = N_BINS) -> DepthBins:
        """The bins of the cells' size factors ``factors``, ``n_bins`` steps of log size factor."""
        factors = np.asarray(factors, dtype=np.float64)
        positive = factors > 0
        log_factors = np.log(np.where(positive, factors, 1.0))
        low = log_factors[positive].min() if positive.any() else 0.0
        high = log_factors[positive].max() if positive.any() else 0.0
        step = (high - low) / n_bins
        steps = np.floor((log_factors - low) / step) if step > 0 else np.zeros(factors.size)
        codes = np.where(positive, 1 + np.clip(steps, 0, n_bins - 1).astype(np.int64), 0)
        _, codes = np.unique(codes, return_inverse=True)  # drop empty bins
        cells = np.bincount(codes)
        size = np.bincount(codes, weights=factors) / cells
        return cls(codes.astype(np.int64), size, cells)

    @property
    def n_bins(self) -> int:
        return self.size.size

    def within(self, factors: np.ndarray, members: np.ndarray) -> DepthBins:
        """The same bins over the cells ``members`` only (a batch): their counts and mean size
        factors per bin, an empty bin at size 1 (it adds nothing to a fit)."""
        codes = self.codes[members]
        cells = np.bincount(codes, minlength=self.n_bins)
        weights = np.bincount(codes, weights=factors[members], minlength=self.n_bins)
        size = np.divide(weights, cells, out=np.ones(self.n_bins), where=cells > 0)
        return DepthBins(codes, size, cells)

    def total(self) -> float:
        """The sum of all cells' size factors."""
        return float(self.cells @ self.size)
