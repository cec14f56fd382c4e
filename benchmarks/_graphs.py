"""Run the ``recall-dask`` command line and record the size of the dask graph of every pass.

Every pass over the cells goes through ``recall_dask.progress.compute``; this wrapper counts
the high-level layers and the tasks of each such graph (as handed to the scheduler, before
optimization), with the stage it ran in, and writes the list as JSON to ``$RECALL_GRAPHS``.
It replaces the two functions wherever the package's modules hold them.

    RECALL_GRAPHS=graphs.json python benchmarks/_graphs.py run sample.h5 -o out.zarr
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager

from dask import is_dask_collection
from dask.highlevelgraph import HighLevelGraph

from recall_dask import progress

_records: list[dict[str, object]] = []
_current = {"stage": "before any stage"}
_compute, _stage = progress.compute, progress.stage


def compute(*collections):
    graphs = [c.__dask_graph__() for c in collections if is_dask_collection(c)]
    graph = HighLevelGraph.merge(*graphs)
    layers = len(graph.layers)
    _records.append({"stage": _current["stage"], "layers": layers, "tasks": len(graph)})
    return _compute(*collections)


@contextmanager
def stage(name, timings):
    _current["stage"] = name
    with _stage(name, timings):
        yield


if __name__ == "__main__":
    from recall_dask.cli import main

    # Modules imported later bind the patched functions through recall_dask.progress.
    for name, module in list(sys.modules.items()):
        if name.startswith("recall_dask"):
            for attribute, original, patched in (
                ("compute", _compute, compute),
                ("stage", _stage, stage),
            ):
                if getattr(module, attribute, None) is original:
                    setattr(module, attribute, patched)

    code = main(sys.argv[1:])
    with open(os.environ["RECALL_GRAPHS"], "w") as handle:
        json.dump(_records, handle)
    sys.exit(code)
