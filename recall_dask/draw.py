"""A draw on its way from its prepared matrix to the graph the loop clusters.

The stages of one draw, in order: prepare (:mod:`recall_dask.methods`: the artificial genes or
the count split, the normalized matrix and the pair test of a clustering) -> embed
(:meth:`DrawStages.embedded`: scaling and exact PCA, and Harmony's correction with batches)
-> graph (:meth:`DrawStages.graph`: kNN and SNN) -> cluster at each resolution and test the
pairs (:mod:`recall_dask.calibrate`) -> answer (:mod:`recall_dask.run`).

Embedding and graph are tasks where the data are (:mod:`recall_dask.tasks`): with a
distributed client the embedding is computed onto a worker, corrected and turned into a graph
there, and written to the work store from there; the client holds neither. Each is a
checkpoint of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from recall_dask.graph.build import neighbor_graph, read_graph, stored_graph
from recall_dask.integrate import harmonized
from recall_dask.io.checkpoints import NoCheckpoints, read_arrays, write_arrays
from recall_dask.pca import cell_embeddings, principal_components
from recall_dask.preprocess.scale import feature_scaling
from recall_dask.progress import stage

if TYPE_CHECKING:
    from recall_dask.io.batches import Batches
    from recall_dask.io.storage import Location
    from recall_dask.params import RecallParams
    from recall_dask.tasks import Tasks


def embedding(data: da.Array, params: RecallParams) -> da.Array:
    """Exact PCA of the scaled data (augmented, or the train half's variable genes), as a
    lazy cells x PCs array (the PCA's Gram pass runs now, the projection when computed)."""
    scaling = feature_scaling(data, params.scale_max)
    pca = principal_components(data, scaling, min(params.n_pcs, data.shape[0]))
    return cell_embeddings(data, scaling, pca)


@dataclass(frozen=True)
class Embedded:
    """A draw's embedding: the future of the PCs its graph uses (the PCA's, or Harmony's
    correction of them), and how to gather its whole embeddings for the answer."""

    pcs: Any
    whole: Callable[[], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class DrawStages:
    """The embed and graph stages of every draw of one run: where their tasks run, the
    checkpoints they keep, and the work store that holds each draw's whole embedding and
    graph when there are several draws (ten draws' graphs of many cells would crowd memory
    for the whole loop; stored, only the graphs being clustered are in memory)."""

    params: RecallParams
    tasks: Tasks
    checkpoints: NoCheckpoints
    work: Location | None
    n_cells: int
    batches: Batches | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def stored(self) -> bool:
        """Whether each draw's embedding and graph wait in the work store."""
        return self.params.draws > 1 and self.work is not None

    def embedded(self, m: int, rows: da.Array) -> Embedded:
        """Draw m's embedding of its prepared ``rows``: PCA, then Harmony with batches."""
        tasks = self.tasks
        pca = self._kept(
            f"embedding-{m}",
            lambda: tasks.compute(embedding(rows, self.params)),
        )
        parts = {"embedding": pca}
        if self.batches is not None:
            with stage("Harmony", self.timings):  # its seconds also count in the outer stage
                parts["harmony"] = self._kept(
                    f"harmony-{m}",
                    lambda: tasks.submit("recall-harmony", harmonized, pca, self.batches),
                )
        last = list(parts.values())[-1]
        if not self.stored:
            return Embedded(last, lambda: tuple(part.result() for part in parts.values()))
        location = self.work.child(f"embedding-{m}.npz")
        tasks.wait(tasks.submit("recall-keep-embedding", write_arrays, location, parts))
        # A copy of the graph's PCs, so that the whole embedding is not kept alive by a view.
        pcs = tasks.submit("recall-graph-pcs", _first_columns, last, self.params.dims)
        tasks.wait(pcs)
        return Embedded(pcs, lambda: tuple(read_arrays(location).values()))

    def graph(self, m: int, embedded: Embedded) -> Any:
        """Draw m's SNN graph: a future of it, or with several draws and a work store, the
        stored graph that each clustering reads back."""
        name = f"graph-{m}"
        location = self.checkpoints.location(name)
        if location is None and self.stored:
            location = self.work.child(f"{name}.npz")
        if self.checkpoints.has(name):
            graph = (
                stored_graph(location, self.n_cells)
                if self.stored
                else self.tasks.submit("recall-read-graph", read_graph, location)
            )
        else:
            graph = self.tasks.submit(
                "recall-neighbor-graph",
                neighbor_graph,
                embedded.pcs,
                self.params,
                location,
                self.stored,
            )
            if self.stored:
                graph = graph.result()  # the stored graph's handle; the graph is in the store
            else:
                self.tasks.wait(graph)
            self.checkpoints.record(name)
        if self.stored:
            nbytes = graph.nbytes
        else:  # the graph stays on its worker: only its size comes back
            nbytes = self.tasks.submit("recall-graph-size", _nbytes, graph).result()
        self.tasks.check_graph_fits(nbytes)
        return graph

    def _kept(self, name: str, make: Callable[[], Any]) -> Any:
        """The future of a draw's array made by ``make`` (a task), or read from the
        checkpoint ``name`` of an earlier run; a new one is written to its checkpoint by a
        task where it is, and waited for, so that stage times are honest."""
        location = self.checkpoints.location(name)
        key = name.rsplit("-", 1)[0]
        if self.checkpoints.has(name):
            future = self.tasks.submit(f"recall-read-{key}", _read_array, location, key)
        else:
            future = make()
            if location is not None:
                saved = self.tasks.submit(
                    "recall-checkpoint", write_arrays, location, {key: future}
                )
                self.tasks.wait(saved)
                self.checkpoints.record(name)
        self.tasks.wait(future)
        return future


def _read_array(location: Location, key: str) -> np.ndarray:
    return read_arrays(location)[key]


def _first_columns(array: np.ndarray, n: int) -> np.ndarray:
    return array[:, :n].copy()


def _nbytes(graph: Any) -> int:
    return graph.nbytes
