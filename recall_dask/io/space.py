"""A full disk: one line that names the store and about how many bytes its writing needed.

Writes fail with ``OSError`` ``ENOSPC`` (or ``EDQUOT``, over quota) wherever the bytes land:
in the client, or in a worker task whose error dask and zarr hand back as it was, chained
behind another error, or inside an exception group. :func:`space_for` wraps a writer and turns
any such failure into one :class:`~recall_dask.errors.OutOfSpaceError` line naming the store,
the bytes the write needed (an estimate made only when it failed) and the bytes free.
It removes nothing itself: the writers remove their partial output as on any failure
(:func:`remove_stragglers` also what running tasks write after it), and a ``--resume`` can
keep what was finished.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import dask.array as da
import numpy as np

from recall_dask.errors import OutOfSpaceError
from recall_dask.io.storage import Location, open_group

if TYPE_CHECKING:  # params imports the stages, which import io
    from recall_dask.params import RecallParams

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
# What an OSError that lost its errno (rebuilt from a message by a wrapper) still says.
_NO_SPACE_TEXT = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
#: Bytes per stored nonzero of a work store, uncompressed: a float64 value and an int32 column.
WORK_BYTES_PER_NONZERO = 12


def out_of_space(error: BaseException) -> bool:
    """Whether ``error`` is, or was caused by, a write that found no space left."""
    stack, seen = [error], set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and (
            current.errno in _NO_SPACE or any(text in str(current) for text in _NO_SPACE_TEXT)
        ):
            return True
        stack += [current.__cause__, current.__context__, *getattr(current, "exceptions", ())]
    return False


@contextmanager
def space_for(where: Location, what: str, needed: Callable[[], int]) -> Iterator[None]:
    """Report running out of space while the body writes ``what`` at ``where`` as one line.

    ``needed()`` estimates the bytes the whole write needs; it runs only if the write failed.
    """
    try:
        yield
    except BaseException as error:
        if not out_of_space(error):
            raise
        free = free_bytes(where)
        raise OutOfSpaceError(
            f"no space left on the device of {what} {where}: it needs about "
            f"{_size(needed())}, {'unknown' if free is None else _size(free)} free; "
            "free some space (or choose another location) and run again"
        ) from error


def remove_stragglers(where: Location, settle: float = 3.0) -> None:
    """Remove ``where`` after a failed run, and again whenever it reappears within ``settle``
    seconds: dask stops no task that is running when another fails, so a few may still write
    their chunks (or, on a full disk, the stubs of chunks they could not write)."""
    deadline = time.monotonic() + settle
    while True:
        with suppress(OSError):  # the caller reports what remains
            where.remove()
        if time.monotonic() >= deadline:
            return
        time.sleep(0.25)


def free_bytes(where: Location) -> int | None:
    """Free bytes on the local disk that holds ``where`` (or would); None for object stores."""
    if not where.is_local:
        return None
    path = Path(where.path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def size_on_disk(where: Location) -> int:
    """Bytes of the file or directory at ``where``; 0 if it is gone."""
    with suppress(FileNotFoundError):
        return int(where.fs.du(where.path, total=True))
    return 0


def work_store_bytes(nnz: int, n_cells: int, params: RecallParams) -> int:
    """Upper estimate of a run's work store, from the ``nnz`` nonzero counts of its input.

    Each draw stores at most twice the input's nonzeros, uncompressed: recall the variable
    genes and as many artificial genes, drawn to look like them; countsplit the train half's
    variable genes and the test half of all genes. Several draws also keep their embeddings and
    SNN graphs; a graph has about 2 k edges per cell (46 at k = 20 on 200,000 simulated cells),
    counted here as 3 k, each an int32 index and a float64 weight.
    """
    graph = 3 * params.k_neighbors * (4 + 8)
    per_cell = params.n_pcs * 8 + graph if params.draws > 1 else 0
    return params.draws * (2 * nnz * WORK_BYTES_PER_NONZERO + n_cells * per_cell)


def stored_nnz(store: Location) -> int:
    """Nonzero counts of the CSR matrix X of an AnnData store: the last entry of its indptr."""
    return int(open_group(store.url, "r", store.storage_options)["X/indptr"][-1])


def counts_nnz(counts: da.Array) -> int:
    """Nonzero counts of a dask array of CSR row blocks, in one pass."""
    per_block = counts.map_blocks(
        lambda block: np.array([block.nnz]),
        chunks=((1,) * counts.numblocks[0],),
        drop_axis=1,
        dtype=np.int64,
        meta=np.empty(0, dtype=np.int64),
    )
    return int(per_block.sum().compute())


def _size(n_bytes: int) -> str:
    """``12,582,912 bytes (12.0 MiB)``."""
    scaled, unit = float(n_bytes), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, bigger
    return f"{n_bytes:,} bytes" + ("" if unit == "bytes" else f" ({scaled:.1f} {unit})")
