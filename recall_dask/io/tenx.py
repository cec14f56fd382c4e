"""Cell Ranger v3 ``.h5`` output: row chunks of counts written as 10x's feature-barcode matrix.

``recall-dask simulate`` writes its counts this way when asked for a ``.h5`` file, so that
benchmarks read the same format as real data; :mod:`recall_dask.io.readers` reads it back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from recall_dask.errors import InputError
from recall_dask.io.counts import write_atomically
from recall_dask.io.readers import Block, Counts
from recall_dask.io.storage import Location
from recall_dask.io.validate import canonical_counts, chunk_rows, validated_rows

# Cell Ranger .h5 output: stored chunk length (entries) of the appended datasets, the chunk
# cache that keeps the partly filled last chunks in memory between appends, and the filters
# (standard HDF5 gzip and shuffle, readable from R and Python alike).
_H5_CHUNK = 1 << 18
_H5_CACHE_BYTES = 16 << 20
_H5_FILTERS: dict[str, Any] = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


def _h5_strings(values: Any) -> np.ndarray:
    """Strings as the fixed-length UTF-8 bytes Cell Ranger stores."""
    return np.char.encode(np.asarray(values, dtype=str), "utf-8")


def _write_10x_file(counts: Counts, target: Location, chunk_size: int, where: Location) -> None:
    """Validate each row chunk and append it to the 10x ``matrix`` group of a new file."""
    n_obs, n_vars = len(counts.obs), len(counts.var)
    with h5py.File(target.path, "w", rdcc_nbytes=_H5_CACHE_BYTES) as file:
        file.attrs.update({"filetype": "matrix", "version": 2})
        group = file.create_group("matrix")
        features = group.create_group("features")
        names = counts.var.index
        for key, values in (
            ("id", counts.var.get("gene_ids", names)),
            ("name", names),
            ("feature_type", counts.var.get("feature_types", ["Gene Expression"] * n_vars)),
            ("genome", counts.var.get("genome", [""] * n_vars)),
            ("_all_tag_keys", ["genome"]),
        ):
            features.create_dataset(key, data=_h5_strings(values), **_H5_FILTERS)
        group.create_dataset("barcodes", data=_h5_strings(counts.obs.index), **_H5_FILTERS)
        appendable = {
            name: group.create_dataset(
                name, shape=(0,), maxshape=(None,), chunks=(_H5_CHUNK,), dtype=dtype, **_H5_FILTERS
            )
            for name, dtype in (("data", np.int32), ("indices", np.int64), ("indptr", np.int64))
        }
        appendable["indptr"].resize((1,))
        appendable["indptr"][0] = 0
        for _, chunk in validated_rows(counts, chunk_size, where):
            rows = canonical_counts(chunk)
            offset = appendable["data"].shape[0]
            for name, values in (
                ("data", rows.data),
                ("indices", rows.indices),
                ("indptr", rows.indptr[1:].astype(np.int64) + offset),
            ):
                dataset = appendable[name]
                start = dataset.shape[0]
                dataset.resize((start + values.size,))
                dataset[start:] = values.astype(dataset.dtype)
        group.create_dataset("shape", data=np.array([n_vars, n_obs], dtype=np.int32))


def write_10x_h5(
    path: str | Path,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    rows: Callable[[int], Iterator[Block]],
    *,
    chunk_size: int | None = None,
) -> None:
    """Write the counts that ``rows(chunk_size)`` yields as a Cell Ranger v3 ``.h5`` file.

    The layout is that of Cell Ranger's feature-barcode matrix: group ``matrix`` holding the
    genes x cells matrix as CSC (``data`` int32, ``indices`` int64, ``indptr`` int64,
    ``shape`` = [genes, cells]), ``barcodes`` from ``obs.index``, and ``features/{id, name,
    feature_type, genome}`` from ``var`` (columns ``gene_ids``, ``feature_types`` and
    ``genome`` if present, else the var names, "Gene Expression" and ""). CSC by cell is CSR
    by cell, so each row chunk is validated as raw counts (like
    :func:`~recall_dask.io.counts.write_stream`) and appended to gzip-compressed, resizable
    datasets; the whole matrix is never in memory.
    The file is written under a hidden sibling name that replaces ``path`` only once complete,
    so a failure leaves neither partial output nor a damaged previous file. Local paths only.
    """
    target = Location.of(path)
    if not target.is_local:
        raise InputError(f"{path}: Cell Ranger .h5 files are written to a local disk only")
    chunk_size = chunk_rows(chunk_size)
    write_atomically(_write_10x_file, Counts(obs, var, rows), target, chunk_size, target)
