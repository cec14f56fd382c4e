"""Neighbor graphs and modularity clustering on the gathered PCA embedding.

Mirrors Seurat's ``FindNeighbors`` (:mod:`~recall_dask.graph.neighbors`, then ``ComputeSNN``
in :mod:`~recall_dask.graph.snn`) and ``FindClusters`` (``RunModularityClustering`` +
``GroupSingletons``, :mod:`~recall_dask.graph.cluster`) with their defaults. The embedding is
small (n_cells x n_pcs), so everything here runs in memory on one machine; nothing is
n x n dense.

Known differences from Seurat:

* Neighbors come from Annoy as Seurat's default ``nn.method = "annoy"`` (same library, trees,
  seed and insertion order, so the same neighbors for the same embedding), or from an exact
  search (``neighbors="exact"``).
* Louvain is Seurat's ModularityOptimizer algorithm, ported step for step (numba kernels in
  :mod:`~recall_dask.graph.louvain`) with the same ``java.util.Random`` stream; Leiden comes
  from leidenalg (:mod:`~recall_dask.graph.leiden`), as Seurat's algorithm 4 does.
* ``GroupSingletons`` breaks connectivity ties by ``sample()``; we take the lowest label.
"""

from recall_dask.graph.cluster import ALGORITHMS, cluster_graph, order_by_size
from recall_dask.graph.neighbors import (
    NEIGHBOR_SEARCHES,
    annoy_neighbors,
    exact_neighbors,
    nearest_neighbors,
)
from recall_dask.graph.network import (
    ClusteringStopped,
    SNNGraph,
    StoredSNNGraph,
    graph_components,
)
from recall_dask.graph.snn import shared_nearest_neighbors

__all__ = [
    "ALGORITHMS",
    "NEIGHBOR_SEARCHES",
    "ClusteringStopped",
    "SNNGraph",
    "StoredSNNGraph",
    "annoy_neighbors",
    "cluster_graph",
    "exact_neighbors",
    "graph_components",
    "nearest_neighbors",
    "order_by_size",
    "shared_nearest_neighbors",
]
