"""How cluster pairs are tested, one module per method of the R package, and the one registry
of methods that the options are validated against.

* ``recall`` (:mod:`~recall_dask.methods.recall`, ``FindClustersRecall``): artificial null
  genes beside the variable genes, and the knockoff filter on each pair's rank-sum tests.
* ``countsplit`` (:mod:`~recall_dask.methods.countsplit`, ``FindClustersCountsplit``):
  cluster one half of the counts, and test each pair for marker genes on the other half.

Each method turns the counts into one :class:`~recall_dask.methods.draws.Prepared` per draw:
the variable genes, the normalized matrix to embed, and the pair test of a clustering. The
stages after that (:mod:`recall_dask.run`) are the same for both. The method names are
declared in :mod:`recall_dask.choices`, which the options are validated against without
importing this package.
"""

from __future__ import annotations

from collections.abc import Callable

from recall_dask.methods.countsplit import countsplit_inputs
from recall_dask.methods.draws import Prepared
from recall_dask.methods.recall import recall_inputs

#: How cluster pairs are tested, by ``--method`` (:data:`recall_dask.choices.METHODS`): each
#: method's inputs for the shared stages,
#: ``(counts, var, params, timings, work, storage_options, checkpoints, batches) -> one
#: Prepared per draw``.
METHODS: dict[str, Callable[..., list[Prepared]]] = {
    "recall": recall_inputs,
    "countsplit": countsplit_inputs,
}

__all__ = ["METHODS", "Prepared", "countsplit_inputs", "recall_inputs"]
