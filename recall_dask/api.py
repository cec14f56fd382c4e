"""``recall`` for Python users, like a scanpy ``tl`` function, and ``recall_store`` for a store.

Both take counts where they are (an in-memory AnnData, a path in any input format, or an
AnnData Zarr store), run :func:`recall_dask.run.run_recall` on them, and annotate the AnnData
with its results under ``key_added`` as scanpy's tools do (see
:class:`~recall_dask.io.results.ResultKeys`): for the default ``"recall"``, ``obs['recall']``,
``obs['recall_initial']``, ``obsm['X_recall_pca']``, ``uns['recall']`` (and
``obs['recall_confidence']`` with several draws). ``obsm['X_pca']`` is never written: it
belongs to the user's own PCA.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from recall_dask import io
from recall_dask.io.batches import (
    BARCODE_SUFFIX,
    Batches,
    csv_batches,
    obs_batches,
    suffix_batches,
)
from recall_dask.io.checkpoints import NO_CHECKPOINTS, Checkpoints, NoCheckpoints
from recall_dask.io.lock import output_lock
from recall_dask.io.results import DEFAULT_KEY, ResultKeys
from recall_dask.io.space import counts_nnz, space_for, stored_nnz, work_store_bytes
from recall_dask.io.storage import Location, StorageOptions
from recall_dask.io.workstore import work_store
from recall_dask.params import RecallParams
from recall_dask.progress import reporting
from recall_dask.run import RecallResult, run_recall

logger = logging.getLogger(__name__)


def recall(
    data: ad.AnnData | str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    layer: str | None = None,
    key_added: str = DEFAULT_KEY,
    chunk_size: int | None = None,
    work_dir: str | os.PathLike | None = None,
    storage_options: StorageOptions = None,
    progress: bool = True,
    **options: Any,
) -> ad.AnnData:
    """Cluster cells with knockoff-calibrated resolution (recall), like a scanpy ``tl`` function;
    ``method="countsplit"`` calibrates it by count splitting instead.

    ``data`` is an in-memory AnnData of raw counts (in ``X`` or ``layers[layer]``) or a path to
    a Cell Ranger folder or .h5, an .h5ad or an AnnData .zarr store. ``options`` are the fields
    of :class:`~recall_dask.params.RecallParams` (``resolution_start``, ``fdr``, ``seed`` ...).
    Adds ``obs[key_added]`` (the labels), ``obs[f"{key_added}_initial"]`` (the first
    clustering, before calibration), ``obsm[f"X_{key_added}_pca"]`` and ``uns[key_added]``
    (with several draws also ``obs[f"{key_added}_confidence"]``); other keys, ``obsm['X_pca']``
    among them, are left alone, so runs under different keys sit side by side. An AnnData is
    annotated in place and
    returned. A path is ingested into the Zarr store ``out``, the results are written there
    too, and the store is returned with X as a lazy dask array; without ``out`` a temporary
    store is used and the result is loaded into memory. Runs on the active Dask client, if any.

    The normalized matrices (recall: variable and artificial genes; countsplit: the train
    half's variable genes and the test half) are computed once and kept, for a path, in a Zarr
    work store under ``work_dir`` (default: the system's temporary directory; on a cluster, a
    directory every worker can reach), removed at the end. For an AnnData they stay in worker
    memory, unless ``work_dir`` is given.

    ``out``, ``work_dir`` and an input ``.zarr`` store may be URLs that fsspec reads
    (``s3://bucket/out.zarr``), opened with ``storage_options`` (default: fsspec's
    configuration and the environment); other input formats are read from local disk.

    ``progress`` shows a line per stage and iteration and a bar per pass over the cells (a
    widget in a notebook); ``False`` keeps the run silent except for warnings.
    """
    with reporting(progress):
        keys = ResultKeys.of(key_added)
        return _recall(data, out, layer, keys, chunk_size, work_dir, storage_options, options)


def _recall(
    data: ad.AnnData | str | os.PathLike,
    out: str | os.PathLike | None,
    layer: str | None,
    keys: ResultKeys,
    chunk_size: int | None,
    work_dir: str | os.PathLike | None,
    storage_options: StorageOptions,
    options: dict[str, Any],
) -> ad.AnnData:
    params = RecallParams(**options)
    if isinstance(data, ad.AnnData):
        batches = batches_of(params, data.obs)
        counts = io.counts_from_anndata(data, layer=layer, chunk_size=chunk_size)
        work = nullcontext() if work_dir is None else work_store(work_dir, storage_options)
        with (
            work as store,
            _work_space(
                store,
                storage_options,
                lambda: work_store_bytes(counts_nnz(counts), data.n_obs, params),
            ),
        ):
            result = run_recall(counts, data.var, params, store, storage_options, batches=batches)
        _annotate(data, keys, result)
        if out is not None:
            data.write_zarr(Location.of(out, storage_options).zarr_store())
        return data
    if out is None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "recall.zarr"
            return _recall(
                data, out, layer, keys, chunk_size, work_dir, storage_options, options
            ).to_memory()
    with ingested(data, out, chunk_size=chunk_size, layer=layer, storage_options=storage_options):
        return recall_store(
            out,
            params,
            key_added=keys.record,
            work_dir=work_dir,
            storage_options=storage_options,
        )


@contextmanager
def ingested(
    source: str | os.PathLike,
    store: str | os.PathLike,
    *,
    chunk_size: int | None,
    layer: str | None,
    storage_options: StorageOptions = None,
    checkpoints: NoCheckpoints = NO_CHECKPOINTS,
) -> Iterator[str | os.PathLike]:
    """Ingest ``source`` into a new ``store`` (a path or URL) and yield ``store``; remove the
    store if the work inside fails. A store that ``checkpoints`` lists as ingested is reused.

    A failed run never leaves a half-written output behind. The store's lock is held
    throughout, so a second run on the same output stops at once and removes nothing.
    """
    with output_lock(store, storage_options):
        checkpoints.counts(
            Location.of(store, storage_options),
            lambda: io.ingest(
                source, store, chunk_size=chunk_size, layer=layer, storage_options=storage_options
            ),
        )
        try:
            yield store
        except BaseException:
            try:
                Location.of(store, storage_options).remove()
            except OSError as error:
                logger.warning("could not remove the partial output %s: %s", store, error)
            raise


def recall_store(
    store: str | os.PathLike,
    params: RecallParams,
    *,
    key_added: str = DEFAULT_KEY,
    chunk_size: int | None = None,
    work_dir: str | os.PathLike | None = None,
    storage_options: StorageOptions = None,
    checkpoints: NoCheckpoints = NO_CHECKPOINTS,
    batch_source: str | os.PathLike | None = None,
) -> ad.AnnData:
    """Run recall on an AnnData Zarr store (a path or URL) with CSR counts in X, and write the
    results into it, under ``key_added`` as :func:`recall` does.

    Rows are read in chunks of ``chunk_size`` cells (default: the store's own chunking). The
    normalized matrices live in a work store under ``work_dir`` while the run lasts. Workers
    read the counts and the work store themselves, by URL. The store's lock is held
    throughout; a full disk is one line naming the store or work directory
    (:func:`~recall_dask.io.space.space_for`). With ``checkpoints``
    (:func:`recall_dask.io.checkpoints.checkpoint_store`) the work store is theirs, and
    stages they list as finished are reused. The batches are the store's obs column
    ``params.batch_key``, or with ``batch_source`` a ``barcode,batch`` CSV or
    ``"barcode-suffix"`` (:mod:`recall_dask.io.batches`).
    """
    keys = ResultKeys.of(key_added)
    location = Location.of(store, storage_options)
    with output_lock(store, storage_options):
        adata = io.open_counts(store, chunk_size=chunk_size, storage_options=storage_options)
        batches = batches_of(params, adata.obs, batch_source)
        n_cells = adata.n_obs
        if isinstance(checkpoints, Checkpoints):
            work = nullcontext(checkpoints.work)
        else:
            work = work_store(work_dir, storage_options)
        with (
            work as directory,
            _work_space(
                directory,
                storage_options,
                lambda: work_store_bytes(stored_nnz(location), n_cells, params),
            ),
        ):
            result = run_recall(
                adata.X, adata.var, params, directory, storage_options, checkpoints, batches
            )
        _annotate(adata, keys, result)
        with space_for(location, "the output", lambda: _results_bytes(adata, keys)):
            io.write_results(
                store,
                obs=adata.obs,
                obsm={
                    key: adata.obsm[key]
                    for key in (keys.embedding, keys.harmony)
                    if key in adata.obsm
                },
                uns={keys.record: adata.uns[keys.record]},
                storage_options=storage_options,
            )
    return adata


def _work_space(
    work: Path | str | None, storage_options: StorageOptions, needed: Callable[[], int]
) -> AbstractContextManager[None]:
    """A full work directory as one line, with the work store's estimated size ``needed()``;
    nothing to watch without a work store (the matrices stay in worker memory)."""
    if work is None:
        return nullcontext()
    return space_for(Location.of(work, storage_options), "the work store", needed)


def _results_bytes(adata: ad.AnnData, keys: ResultKeys) -> int:
    """About what :func:`io.write_results` adds to a store: obs and the embedding (the
    ``uns`` record is small beside them), uncompressed."""
    return int(adata.obs.memory_usage(deep=True).sum()) + adata.obsm[keys.embedding].nbytes


def batches_of(
    params: RecallParams, obs: pd.DataFrame, source: str | os.PathLike | None = None
) -> Batches | None:
    """The run's batches: from ``source`` (a CSV or the barcodes' suffix) if given, else from
    obs[``params.batch_key``]; ``None`` without either, or for a single batch."""
    if source is not None:
        labels = (
            suffix_batches(obs.index)
            if str(source) == BARCODE_SUFFIX
            else csv_batches(source, obs.index)
        )
        return Batches.of(params.batch_key or "batch", labels, params.k_neighbors)
    if params.batch_key is None:
        return None
    labels = obs_batches(obs, params.batch_key)
    return Batches.of(params.batch_key, labels, params.k_neighbors)


def _annotate(adata: ad.AnnData, keys: ResultKeys, result: RecallResult) -> None:
    """Write a run's results into ``adata`` under ``keys``: labels in obs, the embedding in
    obsm, the record in uns; with batches each cell's batch and the corrected embedding."""
    adata.obs[keys.labels] = categorical_labels(result.labels, adata.obs_names)
    adata.obs[keys.initial] = categorical_labels(result.initial_labels, adata.obs_names)
    if result.confidence is not None:
        adata.obs[keys.confidence] = result.confidence
    if result.batches is not None:
        adata.obs[keys.batch] = result.batches.labels(adata.obs_names)
        adata.obsm[keys.harmony] = result.harmony
    adata.obsm[keys.embedding] = result.embedding
    adata.uns[keys.record] = result.record


def categorical_labels(labels: np.ndarray, index: pd.Index) -> pd.Series:
    """Cluster labels 0..K-1 as the categorical column a store keeps ("0", "1", ...)."""
    names = [str(i) for i in range(int(labels.max()) + 1)]
    return pd.Series(pd.Categorical.from_codes(labels, categories=names), index=index)
