"""Missing and corrupt chunks of an input store's sparse counts: one line naming the chunk.

Zarr reads a chunk that is not in the store as the array's fill value, so a deleted chunk of
``X/data`` would read as zero counts and the run would go on without a word.
:func:`check_sparse_chunks` therefore lists the stored keys of ``data``, ``indices`` and
``indptr`` once, when a store is opened, and compares them with the chunk grid: one listing
per array, cheap on a local disk and on object stores. The only chunk a writer may leave out
on purpose is an all-zero stretch of ``indptr`` at the start (leading empty rows), which is
allowed. A chunk whose bytes do not decode fails only when it is read: if a read fails
(:func:`naming_corrupt_chunks`), the chunks involved are read one by one, and the one that
fails is named.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import zarr

from recall_dask.errors import InputError
from recall_dask.io.storage import Location

_PARTS = ("data", "indices", "indptr")


def check_sparse_chunks(store: Location, group: zarr.Group) -> None:
    """Raise InputError naming the first chunk of the sparse matrix ``group`` (of ``store``)
    that is not in the store."""
    for name in _PARTS:
        array = group[name]
        prefix = PurePosixPath(store.path, array.path)
        listed = store.fs.find(str(prefix)) if store.isdir() else []
        stored = {
            PurePosixPath("/", path).relative_to(PurePosixPath("/", prefix)) for path in listed
        }
        for coords in np.ndindex(array.cdata_shape):
            key = array.metadata.encode_chunk_key(coords)
            if PurePosixPath(key) not in stored and not _leading_zeros(array, name, coords[0]):
                raise InputError(
                    f"chunk {store}/{array.path}/{key} is missing: the store is incomplete "
                    "(a missing chunk would read as zeros)"
                )


def _leading_zeros(array: zarr.Array, name: str, chunk: int) -> bool:
    """An unwritten ``indptr`` chunk that is rightly all zeros: empty rows at the start."""
    if name != "indptr" or array.metadata.fill_value != 0:
        return False
    return chunk == 0 or int(array[chunk * array.chunks[0] - 1]) == 0


@contextmanager
def naming_corrupt_chunks(group: Any, start: int, stop: int) -> Iterator[None]:
    """While the body reads rows ``start:stop`` of the stored sparse matrix ``group``, turn a
    failure to decode one of its chunks into an InputError naming the chunk. Other errors, and
    groups other than Zarr's (HDF5), pass unchanged."""
    try:
        yield
    except Exception as error:
        if not isinstance(group, zarr.Group):
            raise
        bad = _undecodable(group["indptr"], start, stop + 1)
        if bad is None:
            lo, hi = (int(group["indptr"][i]) for i in (start, stop))
            bad = _undecodable(group["data"], lo, hi) or _undecodable(group["indices"], lo, hi)
        if bad is None:
            raise
        raise InputError(f"chunk {bad} is corrupt and cannot be read ({error})") from error


def _undecodable(array: zarr.Array, lo: int, hi: int) -> str | None:
    """The path of the first chunk of ``array`` overlapping ``lo:hi`` that fails to decode, or
    None. Input/output errors (a network failure, say) are not the chunk's fault."""
    size = array.chunks[0]
    for chunk in range(lo // size, math.ceil(hi / size)):
        try:
            array[chunk * size : (chunk + 1) * size]
        except OSError:
            raise
        except Exception:
            where = str(array.store_path).removeprefix("file://")
            return f"{where}/{array.metadata.encode_chunk_key((chunk,))}"
    return None
