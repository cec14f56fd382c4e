"""The augmented matrix on disk: a Zarr work store read by row chunks and by feature blocks.

The log-normalized [variable genes | artificial genes] matrix (or, for count splitting, the
train half's variable genes and the test half's genes) is computed once and then read many
times: by row chunks for the scaling, the Gram matrix and the embedding, and by feature blocks
for the pairwise tests of every calibration iteration. Kept in worker memory it would
grow with the number of cells; written here, memory stays bounded by the chunk size.

The task that computes a row chunk writes it as CSR tiles, one per feature block, back to back
in row ``r`` of three arrays (``data``, ``indices`` and the tiles' ``indptr``). No Zarr chunk
spans two row chunks, so tasks write concurrently without locks, and the padding past a row
chunk's nonzeros is never written, so it costs no disk. A feature block's tiles sit at about
the same place in every row chunk, so one task reads the block for all cells in a few Zarr
reads that each span many row chunks, decompressing little more than the tiles themselves.

The work store is not an AnnData element, on purpose. anndata's CSR encoding is one
data/indices/indptr triple filled in row order, and ``sparse_dataset(...).append`` resizes
those arrays, so only one writer at a time could add rows, after the previous chunk: the
parallel tasks above would have to queue behind one another, or send their chunks to the
client. Nor could a feature block then be read without reading every entry of the matrix.
The counts store, written in one sequential stream, is anndata's own CSR instead
(:mod:`recall_dask.io.counts`). The work store is private to a run and removed with it.

The work store may live under any URL that fsspec reads (``s3://...``); tasks hold its URL and
storage options and open it themselves, so every worker reads and writes its own chunks.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from uuid import uuid4

import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr

from recall_dask._chunks import CSR_META, rows_only
from recall_dask._testhook import kill_point
from recall_dask.errors import InputError
from recall_dask.io.lock import LOCK_NAME, holding
from recall_dask.io.space import remove_stragglers
from recall_dask.io.storage import Location, StorageOptions, open_group
from recall_dask.progress import compute

logger = logging.getLogger(__name__)

_ENTRIES_PER_CHUNK = 1 << 16  # stored chunk of data and indices: 512 KiB of float64


@contextmanager
def work_store(
    work_dir: str | os.PathLike | None, storage_options: StorageOptions = None
) -> Iterator[Path | str]:
    """A fresh, private work directory under ``work_dir`` for the run's stores, removed
    afterwards, even on failure: a ``Path`` for a local directory, else a URL (open it with
    ``storage_options``). Each store (:func:`write_tiles`) gets its own name inside it.

    ``None`` means the system's temporary directory. On a cluster whose workers do not share
    the client's disk, ``work_dir`` must be a directory (or a URL, such as ``s3://bucket/tmp``)
    that every worker can reach. A local directory must exist; a URL is checked only when the
    store is written (:func:`write_tiles`), since object stores have no directories. The
    directory holds a lock file (:mod:`~recall_dask.io.lock`) while the run lasts.
    """
    root = Location.of(tempfile.gettempdir() if work_dir is None else work_dir, storage_options)
    directory = root.child(f"recall-work-{uuid4().hex}")
    if root.is_local:  # object stores have no directories: writing the store makes the prefix
        if not root.isdir():
            raise InputError(f"work directory {work_dir} does not exist")
        os.mkdir(directory.path, 0o700)  # private, as tempfile.mkdtemp makes it
    try:
        with holding(directory.child(LOCK_NAME), f"the work store {directory}"):
            yield Path(directory.path) if directory.is_local else directory.url
    except BaseException:
        remove_stragglers(directory)
        raise
    finally:
        try:
            directory.remove()
        except OSError as error:
            logger.warning("could not remove the work store %s: %s", directory, error)


@dataclass(frozen=True)
class Tiles:
    """A matrix in a work store, read lazily either by row chunks or by tiles."""

    url: str
    row_chunks: tuple[int, ...]
    feature_bounds: tuple[int, ...]
    storage_options: StorageOptions = field(default=None, compare=False)

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
            url=self.url,
            storage_options=self.storage_options,
            widths=self._widths,
        )

    def by_feature_blocks(self) -> da.Array:
        """One chunk per feature block, all cells: for tests feature block by feature block.

        Each chunk is read by one task straight from the store, tile after tile, so no tile
        travels between workers and the task graph has one task per block, not per tile.
        """
        return da.map_blocks(
            _read_feature_block,
            chunks=((sum(self.row_chunks),), self._widths),
            dtype=np.float64,
            meta=CSR_META,
            url=self.url,
            storage_options=self.storage_options,
            row_chunks=self.row_chunks,
        )


def write_tiles(
    data: da.Array,
    path: str | os.PathLike,
    feature_block: int,
    storage_options: StorageOptions = None,
) -> Tiles:
    """Compute row-chunked ``data`` into a new work store at ``path`` (a local path or URL),
    one task per row chunk; each task writes its own chunk."""
    data = rows_only(data)
    row_chunks = data.chunks[0]
    n_features = data.shape[1]
    bounds = (*range(0, n_features, feature_block), n_features)
    store = Location.of(path, storage_options)
    url, options = store.url, store.storage_options
    try:
        _create_arrays(store.open_group("w", zarr_format=2), row_chunks, n_features, bounds)
    except OSError as error:
        raise InputError(f"cannot write the work store {store}: {error}") from error
    written = data.map_blocks(
        _write_row_chunk,
        url=url,
        bounds=bounds,
        storage_options=options,
        chunks=((1,) * len(row_chunks),),
        drop_axis=1,
        dtype=np.int64,
        meta=np.empty(0, dtype=np.int64),
    )
    compute(written)
    return Tiles(url, row_chunks, bounds, options)


def _create_arrays(
    root: zarr.Group, row_chunks: tuple[int, ...], n_features: int, bounds: tuple[int, ...]
) -> None:
    """The empty data, indices and indptr arrays: one stored row per row chunk."""
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


def _write_row_chunk(
    block: sp.csr_matrix,
    url: str,
    bounds: tuple[int, ...],
    storage_options: StorageOptions,
    block_info: dict,
) -> np.ndarray:
    """Write one row chunk as its feature-block tiles, into stored row ``r`` (the chunk's
    place); returns its number of nonzeros."""
    r = block_info[0]["chunk-location"][0]
    block = sp.csr_matrix(block)
    tiles = [block[:, a:b] for a, b in pairwise(bounds)]
    starts = np.cumsum([0, *(tile.nnz for tile in tiles)])
    root = open_group(url, "r+", storage_options)
    root["indptr"][r, :, : block.shape[0] + 1] = np.stack(
        [tile.indptr + start for tile, start in zip(tiles, starts, strict=False)]
    )
    nnz = int(starts[-1])
    if nnz:
        root["data"][r, :nnz] = np.concatenate([tile.data for tile in tiles])
        root["indices"][r, :nnz] = np.concatenate([tile.indices for tile in tiles])
    kill_point("work-store-chunk")
    return np.array([nnz])


_OPENED: OrderedDict[str, tuple[zarr.Array, zarr.Array, zarr.Array]] = OrderedDict()
_OPENED_LOCK = threading.Lock()
_OPENED_MAX = 4


def _arrays(url: str, storage_options: StorageOptions) -> tuple[zarr.Array, zarr.Array, zarr.Array]:
    """The store's arrays, opened once per process and kept for the last few stores, keyed
    by URL alone (every run writes a fresh one)."""
    with _OPENED_LOCK:
        if url in _OPENED:
            _OPENED.move_to_end(url)
            return _OPENED[url]
    root = open_group(url, "r", storage_options)
    arrays = root["data"], root["indices"], root["indptr"]
    with _OPENED_LOCK:
        _OPENED[url] = arrays
        while len(_OPENED) > _OPENED_MAX:
            _OPENED.popitem(last=False)
    return arrays


def _read_feature_block(
    url: str, storage_options: StorageOptions, row_chunks: tuple[int, ...], block_info: dict
) -> sp.csr_matrix:
    """The feature block at this block's location for all cells: its tiles, stacked."""
    info = block_info[None]
    f = info["chunk-location"][1]
    col_start, col_stop = info["array-location"][1]
    data, indices, indptr = _arrays(url, storage_options)
    pointers = indptr[:, f, :]  # every row chunk's tile pointers, in one read
    first = pointers[:, 0]
    last = pointers[np.arange(len(row_chunks)), np.asarray(row_chunks)]
    offsets = np.concatenate([[0], np.cumsum(last - first)])
    values = np.empty(offsets[-1], dtype=data.dtype)
    columns = np.empty(offsets[-1], dtype=indices.dtype)
    for rows in _read_groups(first, last):
        for stored, out in ((data, values), (indices, columns)):
            _read_segments(stored, rows, first, last, offsets, out)
    row_pointers = [
        pointers[r, 1 : n_rows + 1] - first[r] + offsets[r] for r, n_rows in enumerate(row_chunks)
    ]
    return sp.csr_matrix(
        (values, columns, np.concatenate([np.zeros(1, dtype=np.int64), *row_pointers])),
        shape=(sum(row_chunks), col_stop - col_start),
    )


#: Row chunks whose tiles one Zarr read fetches together, when they lie side by side.
_ROWS_PER_READ = 64


def _read_groups(first: np.ndarray, last: np.ndarray) -> Iterator[range]:
    """Runs of row chunks to read together: up to :data:`_ROWS_PER_READ`, while the box that
    spans their entries ``first[r]:last[r]`` stays within twice those entries (plus a stored
    chunk). A feature block's tiles sit at about the same place in every row chunk, so the box
    is tight. Each Zarr read has a fixed cost, and one read fetches and decompresses its
    chunks concurrently, so a few box reads beat a read per tile."""
    start = 0
    while start < first.size:
        stop, lo, hi, size = start + 1, first[start], last[start], last[start] - first[start]
        while stop < first.size and stop - start < _ROWS_PER_READ:
            wider_lo, wider_hi = min(lo, first[stop]), max(hi, last[stop])
            wider_size = size + last[stop] - first[stop]
            if (stop + 1 - start) * (wider_hi - wider_lo) > 2 * wider_size + _ENTRIES_PER_CHUNK:
                break
            stop, lo, hi, size = stop + 1, wider_lo, wider_hi, wider_size
        yield range(start, stop)
        start = stop


def _read_segments(
    stored: zarr.Array,
    rows: range,
    first: np.ndarray,
    last: np.ndarray,
    offsets: np.ndarray,
    out: np.ndarray,
) -> None:
    """Copy each row chunk's entries ``first[r]:last[r]`` to ``out[offsets[r]:]``, reading the
    box that spans the rows in one go."""
    lo, hi = int(first[rows].min()), int(last[rows].max())
    if hi <= lo:
        return
    box = stored[rows.start : rows.stop, lo:hi]
    for i, r in enumerate(rows):
        out[offsets[r] : offsets[r + 1]] = box[i, first[r] - lo : last[r] - lo]


def _read_rows(
    url: str, storage_options: StorageOptions, widths: tuple[int, ...], block_info: dict
) -> sp.csr_matrix:
    """The whole row chunk at this block's location, its tiles side by side, in one read."""
    info = block_info[None]
    r = info["chunk-location"][0]
    row_start, row_stop = info["array-location"][0]
    n_rows = row_stop - row_start
    data, indices, indptr = _arrays(url, storage_options)
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
