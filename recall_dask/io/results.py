"""Results of a run, stored next to the counts: obs, obsm and uns entries, and a labels CSV.

:func:`write_results` adds to a store that :mod:`recall_dask.io.counts` wrote (or any
AnnData Zarr store clustered in place) without touching X; :func:`read_results` reads back
everything but X.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import zarr
from anndata.io import read_elem, write_elem

from recall_dask.errors import InputError
from recall_dask.io.counts import open_store
from recall_dask.io.readers import reading
from recall_dask.io.storage import Location, StorageOptions


def _writable(value: Any) -> Any:
    """Make ``value`` writable by anndata: dicts recurse; a list holding dicts becomes a dict
    keyed "0", "1", ... (read back with ``[d[str(i)] for i in range(len(d))]``); other lists
    become numpy arrays."""
    if isinstance(value, Mapping):
        return {str(key): _writable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        if any(isinstance(item, Mapping) for item in value):
            return {str(i): _writable(item) for i, item in enumerate(value)}
        return np.asarray(value)
    return value


def write_results(
    store: str | Path,
    *,
    obs: pd.DataFrame,
    obsm: Mapping[str, np.ndarray],
    uns: Mapping[str, Any],
    storage_options: StorageOptions = None,
) -> None:
    """Store clustering results next to the counts: replace obs (same cells, same order),
    add or replace the given obsm and uns entries; X is left untouched.

    uns values may nest dicts, scalars, strings, arrays and lists; see :func:`_writable` for
    how lists of dicts are stored.
    """
    root = open_store(Location.of(store, storage_options), "r+")
    cells = read_elem(root["obs"]).index
    if not obs.index.equals(cells):
        raise InputError(f"{store}: obs index differs from the cells in the store")
    for key, value in obsm.items():
        if np.shape(value)[0] != len(cells):
            raise InputError(f"obsm[{key!r}] has {np.shape(value)[0]} rows, expected {len(cells)}")
    write_elem(root, "obs", obs)
    for name, entries in (("obsm", {k: np.asarray(v) for k, v in obsm.items()}), ("uns", uns)):
        if name not in root:
            write_elem(root, name, {})
        for key, value in entries.items():
            write_elem(root[name], key, _writable(value))
    zarr.consolidate_metadata(root.store)


def read_results(store: str | Path, *, storage_options: StorageOptions = None) -> ad.AnnData:
    """obs, var, obsm and uns of a store (a path or URL), without X: the results of a run."""
    location = Location.of(store, storage_options)
    root = open_store(location, "r")
    with reading(location):
        parts = {key: read_elem(root[key]) for key in ("obs", "var", "obsm", "uns") if key in root}
    return ad.AnnData(**parts)


def write_labels_csv(path: str | Path, barcodes: Sequence[str], labels: Sequence[Any]) -> None:
    """Write one ``barcode,cluster`` row per cell, in input order, under that header."""
    if len(barcodes) != len(labels):
        raise InputError(f"{len(barcodes)} barcodes but {len(labels)} labels")
    frame = pd.DataFrame({"barcode": np.asarray(barcodes), "cluster": np.asarray(labels)})
    frame.to_csv(path, index=False)
