"""The counts every run reads: a row-chunked AnnData Zarr store, written chunk by chunk and
read lazily.

:func:`ingest` streams the row chunks of any reader (:mod:`recall_dask.io.readers`), validated
and in canonical form (:mod:`recall_dask.io.validate`), into an anndata-encoded CSR matrix in
Zarr; :func:`write_stream` does the same for chunks from any other source. Writes are atomic:
a failure leaves neither partial output nor a damaged previous store. :func:`open_counts`
gives back a dask array of canonical float32 ``scipy.sparse.csr_matrix`` blocks, one per
chunk of cells, whose tasks read the store themselves; :func:`counts_from_anndata` gives the
same for an in-memory AnnData. Stores may be local paths or fsspec URLs
(:mod:`recall_dask.io.storage`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import Any
from uuid import uuid4

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr
from anndata.io import read_elem, sparse_dataset, write_elem

from recall_dask.errors import InputError
from recall_dask.io.integrity import check_sparse_chunks, naming_corrupt_chunks
from recall_dask.io.lock import output_lock
from recall_dask.io.readers import Block, Counts, reader_for, reading
from recall_dask.io.space import size_on_disk, space_for
from recall_dask.io.storage import Location, StorageOptions, open_group
from recall_dask.io.validate import (
    canonical_counts,
    check_chunk,
    check_chunk_size,
    check_totals,
    chunk_rows,
    validated_rows,
)

# Zarr format of the stores we write; pinned so the layout does not change with anndata's default.
_ZARR_FORMAT = 2
# Stored chunk length of X/data, X/indices and X/indptr (anndata chunks all three alike).
_X_STORAGE = {"chunks": (1 << 20,)}
# uns entry that records the store's row chunking: X/indptr, whose chunks span many row chunks,
# no longer tells it.
_STORE_KEY = "recall_dask"
_CSR_META = sp.csr_matrix((0, 0), dtype=np.float32)


@contextmanager
def _writing(path: Location) -> Iterator[None]:
    """Report an output that cannot be written (missing bucket, no permission, ...) as one
    InputError line naming it."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc}") from exc


def _stream_x(counts: Counts, root: zarr.Group, where: Location, chunk_size: int) -> None:
    """Write X through anndata, one validated row chunk at a time.

    ``write_elem`` creates the CSR element from an empty matrix, so that its dtypes and
    chunking do not depend on the first chunk, and ``sparse_dataset(...).append`` adds each
    chunk, so only one chunk is in memory. A stream does not know its number of entries in
    advance, so indptr is 64-bit, and indices too: anndata reads both as stored, and scipy
    (``eliminate_zeros``, which scanpy calls) needs them in one dtype.
    """
    empty = sp.csr_matrix((0, len(counts.var)), dtype=np.float32)
    empty.indices, empty.indptr = (part.astype(np.int64) for part in (empty.indices, empty.indptr))
    write_elem(root, "X", empty, dataset_kwargs=_X_STORAGE)
    x = sparse_dataset(root["X"])
    for _, chunk in validated_rows(counts, chunk_size, where):
        x.append(canonical_counts(chunk))


def _write_store(counts: Counts, target: Location, chunk_size: int, where: Location) -> None:
    """An AnnData store as anndata writes it: obs, var and empty mappings, then X streamed in;
    ``uns['recall_dask']['chunk_size']`` records the row chunking for :func:`open_counts`."""
    root = target.open_group("w", zarr_format=_ZARR_FORMAT)
    store = ad.AnnData(obs=counts.obs, var=counts.var, uns={_STORE_KEY: {"chunk_size": chunk_size}})
    write_elem(root, "/", store)
    _stream_x(counts, root, where, chunk_size)
    zarr.consolidate_metadata(root.store)


def _check_distinct(source: Location, store: Location) -> None:
    """Refuse outputs that would overwrite, contain or sit inside the input."""
    if source.fs.protocol != store.fs.protocol:
        return
    a, b = PurePosixPath(source.path), PurePosixPath(store.path)
    if a == b or a in b.parents or b in a.parents:
        raise InputError(f"output store {store} is or overlaps the input {source}")


def _replace(partial: Path, store: Path) -> None:
    if store.is_dir() and not store.is_symlink():
        shutil.rmtree(store)
    elif store.exists() or store.is_symlink():
        store.unlink()
    partial.rename(store)


def ingest(
    source: str | Path,
    store: str | Path,
    *,
    chunk_size: int | None = None,
    layer: str | None = None,
    storage_options: StorageOptions = None,
) -> None:
    """Convert raw counts in any supported format into an AnnData Zarr store at ``store``.

    X is written as canonical float32 CSR (:func:`canonical_counts`) one chunk of
    ``chunk_size`` cells (default: the ``recall.chunk-size`` knob) at a time, validating each
    chunk (see :func:`write_stream`);
    ``source`` is only ever opened read-only. ``store``, and a ``.zarr`` ``source``, may be any
    URL fsspec reads, opened with ``storage_options``.
    """
    source_at, target = (Location.of(p, storage_options) for p in (source, store))
    chunk_size = chunk_rows(chunk_size)
    _check_distinct(source_at, target)
    with reading(source_at):
        counts = reader_for(source_at)(source_at, layer)
    write_atomically(_write_store, counts, target, chunk_size, source_at)


def write_stream(
    store: str | Path,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    rows: Callable[[int], Iterator[Block]],
    *,
    chunk_size: int | None = None,
    storage_options: StorageOptions = None,
) -> None:
    """Write the counts that ``rows(chunk_size)`` yields, chunk by chunk, as an AnnData store.

    Each chunk is validated as raw counts. On a local disk the store is written into a hidden
    sibling directory that replaces ``store`` only once complete, so a failure leaves neither
    partial output nor a damaged previous store; see :func:`write_atomically` for URLs.
    """
    target = Location.of(store, storage_options)
    chunk_size = chunk_rows(chunk_size)
    write_atomically(_write_store, Counts(obs, var, rows), target, chunk_size, target)


def write_atomically(
    write: Callable[[Counts, Location, int, Location], None],
    counts: Counts,
    out: Location,
    chunk_size: int,
    where: Location,
) -> None:
    """``write`` into a hidden sibling of ``out`` that replaces ``out`` only once complete.

    Object stores (any URL that is not on a local disk) cannot rename a directory
    atomically: there the previous ``out`` is removed, ``write`` writes at ``out`` itself,
    and what it wrote is removed if it fails. A failure leaves no partial output either way,
    but on an object store it does not keep the previous one. The lock of ``out``
    (:func:`~recall_dask.io.lock.output_lock`) is held throughout: one writer at a time.
    """
    with output_lock(out.url, out.storage_options):
        if not out.is_local:
            with _writing(out):
                out.remove()
            try:
                with _writing(out):
                    write(counts, out, chunk_size, where)
            except BaseException:
                with suppress(OSError):
                    out.remove()
                raise
            return
        partial = out.sibling(f".{out.name}.partial-{uuid4().hex}")
        needed = partial if where == out else where  # about the input's size, or what was written
        try:
            with _writing(out), space_for(out, "the output", lambda: size_on_disk(needed)):
                write(counts, partial, chunk_size, where)
                _replace(Path(partial.path), Path(out.path))
        finally:
            partial.remove()


def open_store(store: Location, mode: str) -> zarr.Group:
    """The root group of an existing store, opened in ``mode``; a missing or unreadable store
    is an InputError."""
    if not store.isdir():
        raise InputError(f"{store}: no such Zarr store")
    with reading(store):
        return store.open_group(mode, use_consolidated=None if mode == "r" else False)


def open_counts(
    store: str | Path, *, chunk_size: int | None = None, storage_options: StorageOptions = None
) -> ad.AnnData:
    """Open a store written by :func:`ingest` (a path or URL): obs and var in memory, X lazy.

    X is a dask array of float32 ``csr_matrix`` blocks of ``chunk_size`` cells (default: the
    chunking recorded by ingest, else that of X's indptr in a store written elsewhere). Its
    tasks hold the store's URL, key and storage options, not data or open handles, so each
    worker reads its own rows. anndata's ``read_elem_lazy`` would do the reading, but its
    tasks hold an open Zarr group, and each block must be put in canonical form anyway.
    """
    location = Location.of(store, storage_options)
    root = open_store(location, "r")
    try:
        x = sparse_dataset(root["X"])
    except (KeyError, ValueError):
        x = None
    if x is None or x.format != "csr":
        raise InputError(f"{store}: X is not a CSR count matrix; create the store with ingest()")
    check_sparse_chunks(location, root["X"])
    rows = _stored_chunk_size(root) if chunk_size is None else chunk_size
    check_chunk_size(rows)
    obs, var = read_elem(root["obs"]), read_elem(root["var"])
    n_obs, n_vars = x.shape
    starts = [*range(0, n_obs, rows), n_obs]
    lazy = da.map_blocks(
        _read_csr_block,
        chunks=(tuple(np.diff(starts).tolist()), (n_vars,)),
        dtype=np.float32,
        meta=_CSR_META,
        url=location.url,
        key="X",
        storage_options=location.storage_options,
    )
    return ad.AnnData(X=lazy, obs=obs, var=var)


def _stored_chunk_size(root: zarr.Group) -> int:
    """The row chunking :func:`ingest` recorded, else that of X's indptr."""
    recorded = root.get(f"uns/{_STORE_KEY}")
    if recorded is None:
        return root["X/indptr"].chunks[0]
    return int(read_elem(recorded)["chunk_size"])


def _read_csr_block(
    url: str, key: str, storage_options: StorageOptions, block_info: dict
) -> sp.csr_matrix:
    """The rows of this block, read by the task itself from the CSR element ``key`` at
    ``url`` (only their entries: the indptr is not cached), in canonical form: a store
    clustered in place may hold any valid CSR. A damaged chunk is named."""
    start, stop = block_info[None]["array-location"][0]
    group = open_group(url, "r", storage_options)[key]
    with naming_corrupt_chunks(group, start, stop):
        rows = sparse_dataset(group, should_cache_indptr=False)[start:stop]
    return canonical_counts(rows)


def _row_blocked(matrix: Any, chunk_size: int) -> da.Array:
    """Any in-memory or dask matrix as a dask array chunked by rows only (no copy to disk)."""
    if isinstance(matrix, da.Array):
        return matrix.rechunk((chunk_size, -1))
    matrix = sp.csr_matrix(matrix) if sp.issparse(matrix) else np.asarray(matrix)
    return da.from_array(matrix, chunks=(chunk_size, -1), asarray=False)


def counts_from_anndata(
    adata: ad.AnnData, *, layer: str | None = None, chunk_size: int | None = None
) -> da.Array:
    """Validated raw counts of an in-memory AnnData as row chunks of canonical float32 CSR
    blocks (:func:`canonical_counts`).

    Takes ``adata.X`` or ``adata.layers[layer]`` (dense, CSR, CSC or dask; any integer or
    float dtype holding integers). The checks of :func:`ingest` run eagerly, one pass over the
    blocks, so errors surface here. The matrix itself is never modified.
    """
    chunk_size = chunk_rows(chunk_size)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    matrix = adata.X if layer is None else adata.layers.get(layer)
    if matrix is None:
        raise InputError(f"{where} is missing")
    blocks = _row_blocked(matrix, chunk_size)
    nonzeros = blocks.map_blocks(
        lambda block: np.array([check_chunk(block, where)]),
        chunks=((1,) * blocks.numblocks[0],),
        drop_axis=1,
        dtype=np.int64,
        meta=np.empty(0, dtype=np.int64),
    )
    check_totals(*blocks.shape, int(nonzeros.sum().compute()), where)
    return blocks.map_blocks(canonical_counts, dtype=np.float32, meta=_CSR_META)
