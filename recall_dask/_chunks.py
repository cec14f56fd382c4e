"""Row-block plumbing shared by the streaming stages.

Every stage sees the cells as a dask array chunked by rows only, whose blocks are CSR
matrices. These helpers map a function over the row blocks (knowing each block's first row,
so random streams can be keyed by absolute cell index) or sum per-block partial results
with a tree reduction, so memory stays bounded by the chunk size. Random draws come in fixed
blocks of ``RNG_BLOCK_ROWS`` absolute rows, so they do not depend on the chunking.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp

from recall_dask import config

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


def rows_only(array: da.Array) -> da.Array:
    """``array`` chunked by rows only: one block holds all columns of its cells."""
    return array if len(array.chunks[1]) == 1 else array.rechunk({1: -1})


def _shared(values: tuple) -> list:
    """Wrap arguments other than scalars once (arrays, fitted models), so every task refers to
    one copy in the graph instead of carrying its own."""
    scalar = (int, float, str, bool, np.number, type(None))
    return [v if isinstance(v, scalar) else dask.delayed(v, traverse=False) for v in values]


def _first_row(block_info: dict) -> int:
    return int(block_info[0]["array-location"][0][0])


def _call_with_first_row(block, *args, row_func, block_info):
    return row_func(block, _first_row(block_info), *args)


def map_row_blocks(
    array: da.Array,
    func: Callable[..., Any],
    n_cols: int,
    *args: Any,
    dtype: Any = np.float64,
    meta: Any = CSR_META,
) -> da.Array:
    """Apply ``func(block, first_row, *args)`` to every row block, as one Blockwise layer;
    blocks keep their rows and get ``n_cols`` columns."""
    array = rows_only(array)
    return da.map_blocks(
        _call_with_first_row,
        array,
        *_shared(args),
        row_func=func,
        chunks=(array.chunks[0], (n_cols,)),
        dtype=dtype,
        meta=meta,
    )


class RowBlock(NamedTuple):
    """A row block with the absolute index of its first row."""

    block: Any
    first_row: int


def _tagged(block, block_info):
    """The block with its first row, as the (1, 1) object array a reduction carries."""
    return _object(RowBlock(block, _first_row(block_info)), keepdims=True)


def _object(value: Any, keepdims: bool) -> np.ndarray:
    out = np.empty(1, dtype=object)
    out[0] = value  # one element, even when value is itself an array or a tuple
    return out.reshape((1, 1) if keepdims else ())


def _reduce(parts, axis, keepdims, *, part_of, add, args):
    """One step of the tree: blocks (with their first rows) become a partial, partials add."""
    items = list(parts.ravel())
    blocks = [item for item in items if isinstance(item, RowBlock)]
    partials = [item for item in items if not isinstance(item, RowBlock)]
    if blocks:
        partials.append(part_of(blocks, *args))
    total = partials[0]
    for other in partials[1:]:
        total = add(total, other)
    return _object(total, keepdims)


def reduce_row_blocks(
    array: da.Array,
    part_of: Callable[..., Any],
    add: Callable[[Any, Any], Any],
    *args: Any,
    group: int | None = None,
) -> da.Array:
    """Reduce ``array`` over its row blocks: ``part_of(blocks, *args)`` makes one partial of
    up to ``group`` consecutive blocks, each given as a ``(block, first_row)`` pair, and
    ``add(a, b)`` combines partials up a tree of fan-in ``group`` (default: the
    ``recall.split-every`` knob).

    Built with ``da.reduction`` over a Blockwise layer that tags each block with its first
    row. Partials need not be arrays of the input's shape (a Gram matrix, a histogram), so
    they travel as 0-d object arrays; the result is a 0-d object array. A large ``group``
    makes large partials (a Gram matrix) once per group of blocks, accumulated in place,
    rather than once per block.
    """
    array = rows_only(array)
    group = config.get("split-every") if group is None else group
    tagged = array.map_blocks(
        _tagged,
        dtype=object,
        chunks=((1,) * array.numblocks[0], (1,)),
        meta=np.empty((0, 0), dtype=object),
    )
    step = partial(_reduce, part_of=part_of, add=add, args=tuple(args))
    return da.reduction(
        tagged,
        chunk=_keep,
        combine=step,
        aggregate=step,
        axis=(0, 1),
        split_every={0: max(2, group), 1: 1},
        concatenate=True,
        dtype=object,
        meta=np.empty((), dtype=object),
    )


def _keep(block, axis, keepdims):
    return block


def _summed_blocks(blocks: list, *args: Any, func: Callable[..., np.ndarray]) -> np.ndarray:
    return sum(func(block, *args) for block, _ in blocks)


def _batched(blocks: list, *args: Any, func: Callable[..., np.ndarray], first_rows: bool):
    return func(blocks if first_rows else [block for block, _ in blocks], *args)


def _unwrap(reduced: np.ndarray) -> np.ndarray:
    return np.asarray(reduced[()], dtype=np.float64)


def sum_row_blocks(
    array: da.Array,
    func: Callable[..., np.ndarray],
    shape: tuple[int, ...],
    *args: Any,
    batch: int | None = None,
    first_rows: bool = False,
) -> da.Array:
    """Sum the float64 arrays ``func(block, *args)`` over row blocks with a tree reduction
    (:func:`reduce_row_blocks`); a lazy array of ``shape``.

    With ``batch`` set, ``func`` receives lists of up to ``batch`` consecutive blocks and
    returns their summed partial, so that large partials (a Gram matrix) are accumulated in
    place instead of being allocated, shipped and added once per block. With ``first_rows``,
    each block comes as a ``(block, first_row)`` pair, for random streams keyed by row.
    """
    if batch is None:
        part_of, group = partial(_summed_blocks, func=func), None
    else:
        part_of, group = partial(_batched, func=func, first_rows=first_rows), batch
    reduced = reduce_row_blocks(array, part_of, np.add, *args, group=group)
    return reduced.map_blocks(
        _unwrap,
        chunks=tuple((size,) for size in shape),
        new_axis=list(range(len(shape))),
        dtype=np.float64,
    )
