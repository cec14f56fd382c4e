"""Row-block plumbing shared by the streaming stages.

Every stage sees the cells as a dask array chunked by rows only, whose blocks are CSR
matrices. These helpers map a function over the row blocks (knowing each block's first row,
so random streams can be keyed by absolute cell index) or sum per-block partial results
with a tree reduction, so memory stays bounded by the chunk size. Random draws come in fixed
blocks of ``RNG_BLOCK_ROWS`` absolute rows, so they do not depend on the chunking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp

CSR_META = sp.csr_matrix((0, 0), dtype=np.float64)
RNG_BLOCK_ROWS = 1024  # cells per RNG block, in absolute row coordinates


def rng_block_spans(row_start: int, n_rows: int) -> list[tuple[int, int, int]]:
    """``(block, start, stop)`` for each RNG block holding some of rows ``row_start ..
    row_start + n_rows - 1``: those rows are rows ``start .. stop - 1`` of the block."""
    first = row_start // RNG_BLOCK_ROWS
    last = -(-(row_start + n_rows) // RNG_BLOCK_ROWS)
    return [
        (
            block,
            max(row_start - block * RNG_BLOCK_ROWS, 0),
            min(row_start + n_rows - block * RNG_BLOCK_ROWS, RNG_BLOCK_ROWS),
        )
        for block in range(first, last)
    ]


def row_offsets(array: da.Array) -> np.ndarray:
    """First row of every row block."""
    return np.concatenate([[0], np.cumsum(array.chunks[0])[:-1]]).astype(np.int64)


def _row_blocks(array: da.Array) -> list:
    if len(array.chunks[1]) != 1:
        array = array.rechunk({1: -1})
    return list(array.to_delayed().ravel())


def _shared(values: tuple) -> list:
    """Wrap arguments other than scalars once (arrays, fitted models), so every task refers to
    one copy in the graph instead of carrying its own."""
    scalar = (int, float, str, bool, np.number, type(None))
    return [v if isinstance(v, scalar) else dask.delayed(v, traverse=False) for v in values]


def map_row_blocks(
    array: da.Array,
    func: Callable[..., Any],
    n_cols: int,
    *args: Any,
    dtype: Any = np.float64,
    meta: Any = CSR_META,
) -> da.Array:
    """Apply ``func(block, first_row, *args)`` to every row block; blocks keep their rows."""
    shared = _shared(args)
    call = dask.delayed(func, pure=True)
    blocks = [
        da.from_delayed(call(block, int(start), *shared), (n_rows, n_cols), dtype=dtype, meta=meta)
        for block, start, n_rows in zip(
            _row_blocks(array), row_offsets(array), array.chunks[0], strict=True
        )
    ]
    return da.concatenate(blocks, axis=0)


def sum_row_blocks(
    array: da.Array,
    func: Callable[..., np.ndarray],
    shape: tuple[int, ...],
    *args: Any,
    batch: int | None = None,
    first_rows: bool = False,
) -> da.Array:
    """Sum the float64 arrays ``func(block, *args)`` over row blocks with a tree reduction.

    With ``batch`` set, ``func`` receives lists of up to ``batch`` consecutive blocks and
    returns their summed partial, so that large partials (a Gram matrix) are accumulated in
    place instead of being allocated, shipped and added once per block. With ``first_rows``,
    each block comes as a ``(block, first_row)`` pair, for random streams keyed by row.
    """
    shared = _shared(args)
    call = dask.delayed(func, pure=True)
    blocks = _row_blocks(array)
    if first_rows:
        blocks = [(b, int(start)) for b, start in zip(blocks, row_offsets(array), strict=True)]
    if batch is not None:
        blocks = [blocks[i : i + batch] for i in range(0, len(blocks), batch)]
    parts = [da.from_delayed(call(block, *shared), shape, dtype=np.float64) for block in blocks]
    return da.stack(parts).sum(axis=0, split_every=4)
