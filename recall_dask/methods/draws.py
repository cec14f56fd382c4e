"""What a method hands the shared stages for each draw, and the plumbing both methods use
to prepare it: the draws' seeds, the matrices a draw computes once and keeps, and draws
prepared side by side.

With ``--draws M`` each method prepares M independent draws (of the artificial genes, or of
the count split); with one draw, the seed is ``--seed`` itself, as in the R package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import distributed
import numpy as np

from recall_dask import config
from recall_dask.io.checkpoints import NO_CHECKPOINTS, NoCheckpoints
from recall_dask.io.storage import Location, StorageOptions
from recall_dask.io.workstore import write_tiles
from recall_dask.stats.markers import Markers
from recall_dask.stats.ranksums import feature_block_for

#: Labels (one cluster id per cell, ``0..K-1``) to the K x K matrix of genes selected per pair
#: (-1 on the diagonal) and, for tests that have them, each pair's marker candidates.
PairTest = Callable[[np.ndarray], tuple[np.ndarray, Markers | None]]


@dataclass(frozen=True)
class Prepared:
    """What a method hands to the shared stages, for one draw."""

    genes: np.ndarray  # the variable genes, as indices into var
    rows: da.Array  # the log-normalized matrix to scale and embed, by row chunks
    pair_test: PairTest  # labels -> selected-gene counts per pair, and markers if any


def draw_seeds(seed: int, n_draws: int) -> list[int]:
    """The seed of every draw: ``seed`` itself for one draw (R's procedure), else ``n_draws``
    child seeds of it (numpy's ``SeedSequence.spawn``), so the draws are independent streams."""
    if n_draws == 1:
        return [seed]
    children = np.random.SeedSequence(seed).spawn(n_draws)
    return [int(child.generate_state(1, np.uint32)[0]) for child in children]


def work_name(stem: str, draw: int, n_draws: int) -> str:
    """A draw's store in the work directory: ``stem.zarr`` for one draw, else one per draw."""
    return f"{stem}.zarr" if n_draws == 1 else f"{stem}-{draw}.zarr"


def kept(
    data: da.Array,
    work: Path | str | None,
    name: str,
    storage_options: StorageOptions,
    checkpoints: NoCheckpoints = NO_CHECKPOINTS,
) -> tuple[da.Array, da.Array]:
    """``data`` computed once and kept: as the store ``name`` in the work directory ``work``
    (out of core) or, with ``None``, in worker memory. It comes back twice, lazily: by row
    chunks, for the passes over the cells, and by feature blocks (row-chunked in memory), for
    the pairwise tests. A store that ``checkpoints`` lists as finished is not written again."""
    width = feature_block_for(data.shape[0])
    if work is None:
        rows = _persist(data)
        return rows, rows.rechunk({1: width})
    store = Location.of(work, storage_options).child(name).url
    tiles = checkpoints.tiles(name, lambda: write_tiles(data, store, width, storage_options))
    return tiles.by_rows(), tiles.by_feature_blocks()


def for_each_draw(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``func`` of each draw's item, up to ``recall.draws-at-once`` draws at a time (while one
    sums its Gram matrix, which draws take in turns, another's other passes and its neighbor
    graph fill the gaps). One draw runs in this thread, with its progress bars; several run on
    threads, whose bars would garble each other's."""
    if len(items) == 1:
        return [func(items[0])]
    with ThreadPoolExecutor(config.get("draws-at-once"), thread_name_prefix="draw") as pool:
        return list(pool.map(func, items))


def _persist(array: da.Array) -> da.Array:
    """Keep ``array`` in worker memory for the passes and iterations that reuse it."""
    array = array.persist()
    futures = distributed.futures_of(array)  # none without a distributed client
    if futures:
        distributed.wait(futures)  # so that stage timings are honest
    return array
