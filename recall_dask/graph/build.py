"""A draw's SNN graph from its embedding, as one task: Seurat's ``FindNeighbors`` on the first
``dims`` PCs, in the form that clustering reads, kept in memory or in the work store.

The task runs where the embedding is (a worker, or the client's threads without a
distributed client) and, with a ``location``, writes the graph to the work store there, so
neither the embedding nor the graph passes through the client.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from recall_dask.graph.neighbors import nearest_neighbors
from recall_dask.graph.network import SNNGraph, StoredSNNGraph
from recall_dask.graph.snn import shared_nearest_neighbors
from recall_dask.io.checkpoints import read_arrays, write_arrays

if TYPE_CHECKING:
    from recall_dask.io.storage import Location
    from recall_dask.params import RecallParams


def neighbor_graph(
    embedding: np.ndarray,
    params: RecallParams,
    location: Location | None = None,
    stored: bool = False,
) -> SNNGraph | StoredSNNGraph:
    """The SNN graph of a draw's embedding (the CSR matrix is not kept: with many draws,
    graphs add up). With ``location`` it is also written there; ``stored`` then hands back
    the stored graph, read again by each clustering, instead of the one in memory."""
    knn = nearest_neighbors(embedding[:, : params.dims], params.k_neighbors, params.neighbors)
    graph = SNNGraph.from_snn(shared_nearest_neighbors(knn, params.snn_prune))
    if location is None:
        return graph
    write_arrays(location, graph.arrays())
    return stored_graph(location, graph.n_cells, graph.nbytes) if stored else graph


def stored_graph(location: Location, n_cells: int, nbytes: int | None = None) -> StoredSNNGraph:
    """The graph that :func:`neighbor_graph` wrote to ``location`` (``nbytes``: its size in
    memory, by default that of its uncompressed file)."""
    nbytes = location.fs.size(location.path) if nbytes is None else nbytes
    return StoredSNNGraph(partial(read_network, location), n_cells, nbytes)


def read_network(location: Location) -> tuple[np.ndarray, ...]:
    """A stored graph's :attr:`SNNGraph.network`."""
    return SNNGraph.from_arrays(read_arrays(location)).network


def read_graph(location: Location) -> SNNGraph:
    """A stored graph, whole in memory."""
    return SNNGraph(read_network(location))
