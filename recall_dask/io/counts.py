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
from anndata.io import read_elem, write_elem

from recall_dask.errors import InputError
from recall_dask.io.integrity import check_sparse_chunks, naming_corrupt_chunks
from recall_dask.io.lock import output_lock
from recall_dask.io.readers import Block, Counts, csr_rows, reader_for, reading
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
# Stored chunk length (entries) of X/data and X/indices; X/indptr is chunked by cells instead.
_NNZ_CHUNK = 1 << 20
_CSR_META = sp.csr_matrix((0, 0), dtype=np.float32)


@contextmanager
def _writing(path: Location) -> Iterator[None]:
    """Report an output that cannot be written (missing bucket, no permission, ...) as one
    InputError line naming it."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc}") from exc


def _create_csr(root: zarr.Group, n_vars: int, chunk_size: int) -> zarr.Group:
    """An empty anndata-encoded CSR group; indptr is chunked by ``chunk_size`` cells."""
    group = root.create_group("X")
    group.attrs.update(
        {"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": [0, n_vars]}
    )
    group.create_array("indptr", shape=(1,), chunks=(chunk_size,), dtype="int64", fill_value=0)
    group["indptr"][:] = 0
    group.create_array("indices", shape=(0,), chunks=(_NNZ_CHUNK,), dtype="int32")
    group.create_array("data", shape=(0,), chunks=(_NNZ_CHUNK,), dtype="float32")
    return group


def _append_rows(group: zarr.Group, chunk: sp.csr_matrix) -> None:
    offset = group["data"].shape[0]
    group["indptr"].append(chunk.indptr[1:].astype(np.int64) + offset)
    group["indices"].append(chunk.indices.astype(np.int32))
    group["data"].append(chunk.data)


def _stream_x(counts: Counts, root: zarr.Group, chunk_size: int, where: Location) -> None:
    """Append each validated row chunk to X; then set the shape."""
    group = _create_csr(root, len(counts.var), chunk_size)
    for _, chunk in validated_rows(counts, chunk_size, where):
        _append_rows(group, canonical_counts(chunk))
    group.attrs["shape"] = [len(counts.obs), len(counts.var)]


def _write_store(counts: Counts, target: Location, chunk_size: int, where: Location) -> None:
    root = target.open_group("w", zarr_format=_ZARR_FORMAT)
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    write_elem(root, "obs", counts.obs)
    write_elem(root, "var", counts.var)
    write_elem(root, "obsm", {})
    write_elem(root, "uns", {})
    _stream_x(counts, root, chunk_size, where)
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
        _write_atomically(write, counts, out, chunk_size, where)


def _write_atomically(
    write: Callable[[Counts, Location, int, Location], None],
    counts: Counts,
    out: Location,
    chunk_size: int,
    where: Location,
) -> None:
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
    chunking stored by ingest). Its tasks hold the store's URL, key and storage options, not
    data or open handles, so each worker reads its own rows.
    """
    location = Location.of(store, storage_options)
    root = open_store(location, "r")
    x = root.get("X")
    if x is None or x.attrs.get("encoding-type") != "csr_matrix":
        raise InputError(f"{store}: X is not a CSR count matrix; create the store with ingest()")
    check_sparse_chunks(location, x)
    rows = x["indptr"].chunks[0] if chunk_size is None else chunk_size
    check_chunk_size(rows)
    obs, var = read_elem(root["obs"]), read_elem(root["var"])
    n_obs, n_vars = (int(n) for n in x.attrs["shape"])
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


def _read_csr_block(
    url: str, key: str, storage_options: StorageOptions, block_info: dict
) -> sp.csr_matrix:
    """The rows of this block, read by the task itself from the CSR group ``key`` at ``url``,
    in canonical form: a store clustered in place may hold any valid CSR."""
    (start, stop), (_, n_cols) = block_info[None]["array-location"]
    group = open_group(url, "r", storage_options)[key]
    with naming_corrupt_chunks(group, start, stop):
        return canonical_counts(csr_rows(group, start, stop, n_cols))


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
