"""The SNN graph in the form that clustering reads, and the signal that abandons a clustering.

Louvain, Leiden and ``GroupSingletons`` read only the off-diagonal edges of the SNN graph
and each node's total edge weight (:class:`SNNGraph`), built once per graph and shared by
every clustering of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


class ClusteringStopped(Exception):
    """A clustering abandoned between random starts because its result is no longer needed."""


@dataclass(frozen=True)
class SNNGraph:
    """The SNN graph as clustering reads it, built once and shared by every clustering.

    ``network`` holds the off-diagonal CSR arrays (indptr, indices, weights) and each node's
    total edge weight: all that Louvain, Leiden and ``GroupSingletons`` use (Seurat drops the
    diagonal too), so the CSR matrix itself need not be kept.
    """

    network: tuple[np.ndarray, ...]

    @classmethod
    def from_snn(cls, snn: sp.csr_matrix | SNNGraph | StoredSNNGraph) -> SNNGraph | StoredSNNGraph:
        """The graph of an SNN matrix (canonical CSR assumed, summed if not); a graph already
        in this form is returned as it is."""
        if isinstance(snn, SNNGraph | StoredSNNGraph):
            return snn
        snn = sp.csr_matrix(snn)
        if not snn.has_canonical_format:
            snn = snn.copy()
            snn.sum_duplicates()
        return cls(_network(snn))

    @property
    def n_cells(self) -> int:
        return self.network[3].size

    @property
    def nbytes(self) -> int:
        """Bytes in memory: what a clustering task holds before its own arrays."""
        return sum(part.nbytes for part in self.network)

    def arrays(self) -> dict[str, np.ndarray]:
        """The network's arrays, named by their place (as the work store keeps them)."""
        return {str(i): part for i, part in enumerate(self.network)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SNNGraph:
        """The graph whose :meth:`arrays` these are."""
        return cls(tuple(arrays[str(i)] for i in range(len(arrays))))


@dataclass(frozen=True)
class StoredSNNGraph:
    """An SNN graph kept out of memory, read back whole by each clustering of it.

    With several draws every draw's graph is clustered again at each resolution, and the
    graphs of ten draws of 200,000 cells would hold over a gigabyte in the client for the
    whole loop; stored, only the graphs being clustered are in memory. ``read`` returns
    :attr:`SNNGraph.network`.
    """

    read: Callable[[], tuple[np.ndarray, ...]]
    n_cells: int
    nbytes: int = 0  # of the graph once read

    @property
    def network(self) -> tuple[np.ndarray, ...]:
        return self.read()


def graph_components(graph: SNNGraph | StoredSNNGraph) -> np.ndarray:
    """Each cell's connected component of the graph: no clustering puts cells of two
    components in one community (they share no edge)."""
    from scipy.sparse.csgraph import connected_components

    indptr, indices = graph.network[:2]
    n = graph.n_cells
    edges = sp.csr_matrix((np.ones(indices.size, dtype=np.int8), indices, indptr), shape=(n, n))
    return connected_components(edges, directed=False)[1]


def _network(snn: sp.csr_matrix) -> tuple[np.ndarray, ...]:
    """CSR parts of the SNN without its diagonal, and each node's total edge weight.

    Built by masking the stored entries, without the copies a sparse subtraction makes. The
    indices keep the SNN's dtype (int32 for fewer than 2^31 edges), which cuts the memory
    traffic of Louvain's sweeps.
    """
    n = snn.shape[0]
    rows = np.repeat(np.arange(n, dtype=snn.indices.dtype), np.diff(snn.indptr))
    keep = (snn.indices != rows) & (snn.data != 0)
    rows = rows[keep]
    weights = snn.data[keep].astype(np.float64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    node_weight = np.bincount(rows, weights=weights, minlength=n).astype(np.float64)
    return indptr, snn.indices[keep], weights, node_weight
