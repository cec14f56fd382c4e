"""The augmented matrix on disk: a Zarr work store read by row chunks and by feature blocks.

The log-normalized [variable genes | artificial genes] matrix is computed once and then read
many times: by row chunks for the scaling, the Gram matrix and the embedding, and by feature
blocks for the pairwise tests of every calibration iteration. Kept in worker memory it would
grow with the number of cells; written here, memory stays bounded by the chunk size.

The task that computes a row chunk writes it as CSR tiles, one per feature block, back to back
in row ``r`` of three arrays (``data``, ``indices`` and the tiles' ``indptr``). No Zarr chunk
spans two row chunks, so tasks write concurrently without locks, and the padding past a row
chunk's nonzeros is never written, so it costs no disk. Reading a tile decompresses little
more than the tile itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr

from recall_dask._chunks import CSR_META
from recall_dask.errors import InputError

_ENTRIES_PER_CHUNK = 1 << 16  # stored chunk of data and indices: 512 KiB of float64


@contextmanager
def work_store(work_dir: str | os.PathLike | None) -> Iterator[Path]:
    """Path of a fresh work store in a new directory under ``work_dir``, removed afterwards.

    ``None`` means the system's temporary directory. On a cluster whose workers do not share
    the client's disk, ``work_dir`` must be a directory that every worker can reach.
    """
    if work_dir is not None and not Path(work_dir).is_dir():
        raise InputError(f"work directory {work_dir} does not exist")
    directory = Path(tempfile.mkdtemp(prefix="recall-work-", dir=work_dir))
    try:
        yield directory / "augmented.zarr"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class Tiles:
    """A matrix in a work store, read lazily either by row chunks or by tiles."""

    path: str
    row_chunks: tuple[int, ...]
    feature_bounds: tuple[int, ...]

    @property
    def _widths(self) -> tuple[int, ...]:
        return tuple(np.diff(self.feature_bounds).tolist())

    def by_rows(self) -> da.Array:
        """One chunk per row chunk, all features: for passes over the cells."""
        return da.map_blocks(
            _read_rows,
            chunks=(self.row_chunks, (self.feature_bounds[-1],)),
            dtype=np.float64,
            meta=CSR_META,
            path=self.path,
            widths=self._widths,
        )

    def by_tiles(self) -> da.Array:
        """One chunk per (row chunk, feature block): for tests feature block by feature block."""
        return da.map_blocks(
            _read_tile,
            chunks=(self.row_chunks, self._widths),
            dtype=np.float64,
            meta=CSR_META,
            path=self.path,
        )


def write_tiles(data: da.Array, path: str | os.PathLike, feature_block: int) -> Tiles:
    """Compute row-chunked ``data`` into a new work store at ``path``, one task per row chunk."""
    if len(data.chunks[1]) != 1:
        data = data.rechunk({1: -1})
    row_chunks = data.chunks[0]
    n_features = data.shape[1]
    bounds = (*range(0, n_features, feature_block), n_features)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    longest = max(row_chunks)
    for name, dtype in (("data", "float64"), ("indices", "int32")):
        root.create_array(
            name,
            shape=(len(row_chunks), max(1, longest * n_features)),
            chunks=(1, _ENTRIES_PER_CHUNK),
            dtype=dtype,
            fill_value=0,
        )
    root.create_array(
        "indptr",
        shape=(len(row_chunks), len(bounds) - 1, longest + 1),
        chunks=(1, len(bounds) - 1, longest + 1),
        dtype="int64",
        fill_value=0,
    )
    write = dask.delayed(_write_row_chunk, pure=True)
    blocks = data.to_delayed()[:, 0]
    dask.compute(*(write(block, r, str(path), bounds) for r, block in enumerate(blocks)))
    return Tiles(str(path), row_chunks, bounds)


def _write_row_chunk(block: sp.csr_matrix, r: int, path: str, bounds: tuple[int, ...]) -> int:
    """Write one row chunk as its feature-block tiles; returns its number of nonzeros."""
    block = sp.csr_matrix(block)
    tiles = [block[:, a:b] for a, b in pairwise(bounds)]
    starts = np.cumsum([0, *(tile.nnz for tile in tiles)])
    root = zarr.open_group(path, mode="r+")
    root["indptr"][r, :, : block.shape[0] + 1] = np.stack(
        [tile.indptr + start for tile, start in zip(tiles, starts, strict=False)]
    )
    nnz = int(starts[-1])
    if nnz:
        root["data"][r, :nnz] = np.concatenate([tile.data for tile in tiles])
        root["indices"][r, :nnz] = np.concatenate([tile.indices for tile in tiles])
    return nnz


@lru_cache(maxsize=4)
def _arrays(path: str) -> tuple[zarr.Array, zarr.Array, zarr.Array]:
    """The store's arrays, opened once per process (every run writes a fresh path)."""
    root = zarr.open_group(path, mode="r")
    return root["data"], root["indices"], root["indptr"]


def _read_tile(path: str, block_info: dict) -> sp.csr_matrix:
    """The tile at this block's (row chunk, feature block) location."""
    info = block_info[None]
    r, f = info["chunk-location"]
    (row_start, row_stop), (col_start, col_stop) = info["array-location"]
    n_rows = row_stop - row_start
    data, indices, indptr = _arrays(path)
    pointers = indptr[r, f, : n_rows + 1]
    first, last = int(pointers[0]), int(pointers[-1])
    return sp.csr_matrix(
        (data[r, first:last], indices[r, first:last], pointers - first),
        shape=(n_rows, col_stop - col_start),
    )


def _read_rows(path: str, widths: tuple[int, ...], block_info: dict) -> sp.csr_matrix:
    """The whole row chunk at this block's location, its tiles side by side, in one read."""
    info = block_info[None]
    r = info["chunk-location"][0]
    row_start, row_stop = info["array-location"][0]
    n_rows = row_stop - row_start
    data, indices, indptr = _arrays(path)
    pointers = indptr[r, :, : n_rows + 1]
    nnz = int(pointers[-1, -1])
    values, columns = data[r, :nnz], indices[r, :nnz]
    tiles = [
        sp.csr_matrix(
            (values[p[0] : p[-1]], columns[p[0] : p[-1]], p - p[0]), shape=(n_rows, width)
        )
        for p, width in zip(pointers, widths, strict=True)
    ]
    return sp.hstack(tiles, format="csr")
