"""Results of a run, stored next to the counts: obs, obsm and uns entries, and a labels CSV.

:class:`ResultKeys` names where a run's results go, scanpy-style under one ``key_added``;
:func:`stored_keys` finds them again, also in stores written before ``key_added`` existed.
:func:`write_results` adds to a store that :mod:`recall_dask.io.counts` wrote (or any
AnnData Zarr store clustered in place) without touching X; :func:`read_results` reads back
everything but X.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import zarr
from anndata.io import read_elem, write_elem

from recall_dask.choices import DEFAULT_KEY
from recall_dask.errors import InputError
from recall_dask.io.counts import open_store
from recall_dask.io.readers import reading
from recall_dask.io.storage import Location, StorageOptions


@dataclass(frozen=True)
class ResultKeys:
    """Where one run's results sit in an AnnData.

    :meth:`of` names them after ``key_added`` as scanpy's tools do, so that runs under
    different keys sit side by side and none overwrites ``obsm['X_pca']`` or
    ``obsm['X_umap']``: for ``"recall"``, ``obs['recall']`` (labels), ``obs['recall_initial']``
    (the first clustering), ``obs['recall_confidence']`` (several draws),
    ``obsm['X_recall_pca']`` and ``uns['recall']``; with batches, ``obs['recall_batch']`` and
    ``obsm['X_recall_harmony']``; the report adds ``obsm['X_recall_umap']`` and
    ``obs['recall_default']``. :data:`LEGACY_KEYS` are the names stores had before.
    """

    labels: str
    initial: str
    confidence: str
    embedding: str
    record: str
    umap: str
    default: str
    harmony: str = "X_recall_harmony"
    batch: str = "recall_batch"

    @classmethod
    def of(cls, key_added: str) -> ResultKeys:
        """The keys of the results written under ``key_added``."""
        if not isinstance(key_added, str) or not key_added or "/" in key_added:
            raise InputError(f"key_added must be a non-empty name without '/', got {key_added!r}")
        return cls(
            labels=key_added,
            initial=f"{key_added}_initial",
            confidence=f"{key_added}_confidence",
            embedding=f"X_{key_added}_pca",
            record=key_added,
            umap=f"X_{key_added}_umap",
            default=f"{key_added}_default",
            harmony=f"X_{key_added}_harmony",
            batch=f"{key_added}_batch",
        )

    def graph_embedding(self, obsm: Mapping[str, object]) -> str:
        """The key of the embedding the neighbor graph was built on: Harmony's correction of
        the PCs with batches, else the PCs."""
        return self.harmony if self.harmony in obsm else self.embedding


#: The keys of stores written before ``key_added``: what :func:`stored_keys` falls back to.
LEGACY_KEYS = ResultKeys(
    labels="recall_clusters",
    initial="initial_clusters",
    confidence="recall_confidence",
    embedding="X_pca",
    record="recall",
    umap="X_umap",
    default="default_clusters",
)


def stored_keys(adata: ad.AnnData, where: object, key_added: str = DEFAULT_KEY) -> ResultKeys:
    """The keys of the results under ``key_added`` in ``adata``, read from ``where``; for the
    default key, those of a store written before ``key_added`` existed when it holds no newer
    results. Raises InputError when there are none."""
    candidates = [ResultKeys.of(key_added)]
    if key_added == DEFAULT_KEY:
        candidates.append(LEGACY_KEYS)
    for keys in candidates:
        if keys.record in adata.uns and keys.labels in adata.obs:
            return keys
    raise InputError(
        f"{where}: no recall results under key {key_added!r}; write them with `recall-dask run`"
    )


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
