"""Marker candidates of a cluster pair: the genes that the knockoff filter selected to tell
the pair apart, strongest first (``uns['recall']['markers']``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recall_dask.stats.knockoff import strongest_selected

#: Marker candidates recorded per cluster pair: the selected genes with the largest W.
MARKERS_PER_PAIR = 10


@dataclass(frozen=True)
class Markers:
    """For each cluster pair ``a < b``, the knockoff-selected genes with the largest W (at most
    :data:`MARKERS_PER_PAIR`, by decreasing W): marker candidates that tell the pair apart.

    Parallel arrays, one entry per (pair, gene); ``gene`` indexes the variable genes and
    ``higher_in`` is the cluster of the pair where the gene ranks higher (W has no direction).
    """

    cluster_a: np.ndarray
    cluster_b: np.ndarray
    gene: np.ndarray
    W: np.ndarray
    higher_in: np.ndarray

    @classmethod
    def strongest(
        cls, w: np.ndarray, direction: np.ndarray, pairs: np.ndarray, fdr: float
    ) -> Markers:
        """The markers of every pair from its rows of ``w`` and of the rank-sum ``direction``
        (pairs x variable genes; +1 where the pair's first cluster ranks higher)."""
        top = [strongest_selected(row, fdr, MARKERS_PER_PAIR) for row in w]
        row = np.repeat(np.arange(len(top)), [t.size for t in top])
        gene = np.concatenate([np.zeros(0, dtype=np.int64), *top])
        a, b = pairs[row, 0], pairs[row, 1]
        return cls(a, b, gene, w[row, gene], np.where(direction[row, gene] > 0, a, b))

    def record(self, gene_names: np.ndarray) -> dict[str, np.ndarray]:
        """The ``uns['recall']['markers']`` entry, with genes by name."""
        return {
            "cluster_a": self.cluster_a,
            "cluster_b": self.cluster_b,
            "gene": np.asarray(gene_names, dtype=str)[self.gene],
            "W": self.W,
            "higher_in": self.higher_in,
        }
