"""``recall``: one cell matrix from counts to calibrated labels, stage by stage.

recall (``FindClustersRecall``): counts -> variable genes -> artificial genes from their
nulls -> augmented, log-normalized matrix (in a Zarr work store, or in worker memory).
Count splitting (``FindClustersCountsplit``): counts -> train and test halves -> variable genes
of the train half -> its log-normalized variable genes, and the log-normalized test half of
all genes (both in the work store, or in worker memory). Then both: scaling and exact PCA ->
gathered embedding -> kNN and SNN graph -> calibration loop with the method's pair test ->
labels in ``obs``, embedding in ``obsm``, trace in ``uns``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import anndata as ad
import dask.array as da
import distributed
import numpy as np
import pandas as pd

from recall_dask import io
from recall_dask.calibrate import Iteration, PairTest, calibrate, selected_gene_counts
from recall_dask.countsplit import counts_half, log_normalized_half, marker_gene_counts
from recall_dask.errors import InputError
from recall_dask.graph import nearest_neighbors, shared_nearest_neighbors
from recall_dask.nulls import fit_null
from recall_dask.params import RecallParams
from recall_dask.pca import cell_embeddings, pca_from_gram, scaled_gram
from recall_dask.preprocess import (
    augmented_log_normalized,
    column_moments,
    feature_scaling,
    select_variable_genes,
    top_vst_genes,
)
from recall_dask.progress import compute, reporting
from recall_dask.storage import Location, StorageOptions
from recall_dask.wilcoxon import feature_block_for
from recall_dask.workstore import work_store, write_tiles

logger = logging.getLogger(__name__)

_VERSIONED = (
    "recall-dask",
    "dask",
    "distributed",
    "anndata",
    "zarr",
    "numpy",
    "scipy",
    "numba",
    "igraph",
    "leidenalg",
    "scikit-misc",
)


@contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    logger.info("%s ...", name)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)
    logger.info("%s done in %.2f s", name, timings[name])


def _kept(
    data: da.Array, work: Path | str | None, name: str, storage_options: StorageOptions
) -> tuple[da.Array, da.Array]:
    """``data`` computed once and kept: as the store ``name`` in the work directory ``work``
    (out of core) or, with ``None``, in worker memory. It comes back twice, lazily: by row
    chunks, for the passes over the cells, and by feature blocks (row-chunked in memory), for
    the pairwise tests."""
    width = feature_block_for(data.shape[0])
    if work is None:
        rows = _persist(data)
        return rows, rows.rechunk({1: width})
    store = Location.of(work, storage_options).child(name).url
    tiles = write_tiles(data, store, width, storage_options)
    return tiles.by_rows(), tiles.by_feature_blocks()


def augment(
    counts: da.Array,
    var: pd.DataFrame,
    params: RecallParams,
    timings: dict[str, float],
    work: Path | str | None,
    storage_options: StorageOptions = None,
) -> tuple[np.ndarray, da.Array, da.Array]:
    """Variable genes and the log-normalized [genes | artificial genes] matrix, computed once
    and kept (:func:`_kept`), by rows and by tiles."""
    with _stage("variable genes", timings):
        (moments,) = compute(column_moments(counts))
        genes = select_variable_genes(counts, var, params.n_hvg, moments)
    with _stage("null fits", timings):
        null = fit_null(counts[:, genes], params.null_method, params.seed)
    with _stage("artificial genes and normalization", timings):
        data = augmented_log_normalized(counts, genes, null, params.seed, params.target_sum)
        rows, tiles = _kept(data, work, "augmented.zarr", storage_options)
    return genes, rows, tiles


@dataclass(frozen=True)
class _Prepared:
    """What a method hands to the shared stages."""

    genes: np.ndarray  # the variable genes, as indices into var
    rows: da.Array  # the log-normalized matrix to scale and embed, by row chunks
    pair_test: PairTest  # labels -> selected-gene counts per pair, and markers if any


def _recall_inputs(
    counts: da.Array,
    var: pd.DataFrame,
    params: RecallParams,
    timings: dict[str, float],
    work: Path | str | None,
    storage_options: StorageOptions,
) -> _Prepared:
    """``FindClustersRecall``: embed the augmented matrix, test pairs with knockoffs on it."""
    genes, rows, tiles = augment(counts, var, params, timings, work, storage_options)
    test = partial(selected_gene_counts, tiles, n_genes=genes.size, fdr=params.fdr)
    return _Prepared(genes, rows, test)


def _countsplit_inputs(
    counts: da.Array,
    var: pd.DataFrame,
    params: RecallParams,
    timings: dict[str, float],
    work: Path | str | None,
    storage_options: StorageOptions,
) -> _Prepared:
    """``FindClustersCountsplit``: embed the train half's variable genes, test pairs for marker
    genes on the test half of all genes (:mod:`recall_dask.countsplit`).

    The variable genes are vst's top ``n_hvg`` of the train half; ``var['highly_variable']`` is
    not used, since genes chosen on all counts would let the test half shape the clusters.
    """
    seed, target_sum = params.seed, params.target_sum
    with _stage("variable genes", timings):
        train = counts_half(counts, seed, "train")
        moments = compute(column_moments(train))[0]
        genes = top_vst_genes(train, var.index, params.n_hvg, moments)
    with _stage("count splitting and normalization", timings):
        train_genes = log_normalized_half(counts, seed, "train", target_sum, genes)
        rows, _ = _kept(train_genes, work, "train.zarr", storage_options)
        test = log_normalized_half(counts, seed, "test", target_sum)
        _, test_tiles = _kept(test, work, "test.zarr", storage_options)

    def pair_test(labels: np.ndarray) -> tuple[np.ndarray, None]:
        return marker_gene_counts(test_tiles, labels, alpha=params.fdr), None

    return _Prepared(genes, rows, pair_test)


_METHODS = {"recall": _recall_inputs, "countsplit": _countsplit_inputs}


def embed(data: da.Array, params: RecallParams, timings: dict[str, float]) -> np.ndarray:
    """Exact PCA of the scaled data (augmented, or the train half's variable genes), gathered
    as cells x PCs."""
    with _stage("scaling and PCA", timings):
        scaling = feature_scaling(data, params.scale_max)
        pca = pca_from_gram(scaled_gram(data, scaling), min(params.n_pcs, data.shape[0]))
        return compute(cell_embeddings(data, scaling, pca))[0]


def run_recall(
    counts: da.Array,
    var: pd.DataFrame,
    params: RecallParams,
    store: Path | str | None = None,
    storage_options: StorageOptions = None,
) -> tuple[np.ndarray, list[Iteration], dict[str, Any]]:
    """Embedding, calibration iterations and the ``uns['recall']`` record for a count matrix,
    by ``params.method``.

    ``store`` is the path or URL of the work directory for the normalized matrices; ``None``
    keeps them in worker memory.
    """
    n_cells = counts.shape[0]
    if n_cells < params.k_neighbors:
        raise InputError(f"fewer cells ({n_cells}) than neighbours (k = {params.k_neighbors})")
    timings: dict[str, float] = {}
    inputs = _METHODS[params.method](counts, var, params, timings, store, storage_options)
    embedding = embed(inputs.rows, params, timings)
    with _stage("neighbour graph", timings):
        knn = nearest_neighbors(embedding[:, : params.dims], params.k_neighbors, params.neighbors)
        snn = shared_nearest_neighbors(knn, params.snn_prune)
    with _stage("calibration", timings):
        iterations = calibrate(snn, inputs.pair_test, params)
    record = {
        "method": params.method,
        "params": params.as_dict(),
        "seed": params.seed,
        "versions": _versions(),
        "variable_genes": np.asarray(var.index[inputs.genes], dtype=str),
        "iterations": {str(i): it.summary() for i, it in enumerate(iterations)},
        "n_iterations": len(iterations),
        "resolution": iterations[-1].resolution,
        "n_clusters": iterations[-1].n_clusters,
        # Two parallel arrays, because stores sort dict keys and the stage order matters.
        "stage_seconds": {
            "stage": np.array(list(timings), dtype=str),
            "seconds": np.array(list(timings.values())),
        },
    }
    if iterations[-1].markers is not None:  # count splitting has no knockoff W
        record["markers"] = iterations[-1].markers.record(var.index[inputs.genes])
    return embedding, iterations, record


def recall(
    data: ad.AnnData | str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    layer: str | None = None,
    chunk_size: int = io.DEFAULT_CHUNK_SIZE,
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
    Adds ``obs['recall_clusters']``, ``obs['initial_clusters']`` (the first clustering, before
    calibration), ``obsm['X_pca']`` and ``uns['recall']``. An AnnData is annotated in place and
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
        return _recall(data, out, layer, chunk_size, work_dir, storage_options, options)


def _recall(
    data: ad.AnnData | str | os.PathLike,
    out: str | os.PathLike | None,
    layer: str | None,
    chunk_size: int,
    work_dir: str | os.PathLike | None,
    storage_options: StorageOptions,
    options: dict[str, Any],
) -> ad.AnnData:
    params = RecallParams(**options)
    if isinstance(data, ad.AnnData):
        counts = io.counts_from_anndata(data, layer=layer, chunk_size=chunk_size)
        with nullcontext() if work_dir is None else work_store(work_dir, storage_options) as store:
            _annotate(data, *run_recall(counts, data.var, params, store, storage_options))
        if out is not None:
            data.write_zarr(Location.of(out, storage_options).zarr_store())
        return data
    if out is None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "recall.zarr"
            return _recall(
                data, out, layer, chunk_size, work_dir, storage_options, options
            ).to_memory()
    with ingested(data, out, chunk_size=chunk_size, layer=layer, storage_options=storage_options):
        return recall_store(out, params, work_dir=work_dir, storage_options=storage_options)


@contextmanager
def ingested(
    source: str | os.PathLike,
    store: str | os.PathLike,
    *,
    chunk_size: int,
    layer: str | None,
    storage_options: StorageOptions = None,
) -> Iterator[str | os.PathLike]:
    """Ingest ``source`` into a new ``store`` (a path or URL) and yield ``store``; remove the
    store if the work inside fails.

    A failed run never leaves a half-written output behind.
    """
    io.ingest(source, store, chunk_size=chunk_size, layer=layer, storage_options=storage_options)
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
    chunk_size: int | None = None,
    work_dir: str | os.PathLike | None = None,
    storage_options: StorageOptions = None,
) -> ad.AnnData:
    """Run recall on an AnnData Zarr store (a path or URL) with CSR counts in X, and write the
    results into it.

    Rows are read in chunks of ``chunk_size`` cells (default: the store's own chunking). The
    normalized matrices live in a work store under ``work_dir`` while the run lasts. Workers
    read the counts and the work store themselves, by URL.
    """
    adata = io.open_counts(store, chunk_size=chunk_size, storage_options=storage_options)
    with work_store(work_dir, storage_options) as work:
        _annotate(adata, *run_recall(adata.X, adata.var, params, work, storage_options))
    io.write_results(
        store,
        obs=adata.obs,
        obsm={"X_pca": adata.obsm["X_pca"]},
        uns={"recall": adata.uns["recall"]},
        storage_options=storage_options,
    )
    return adata


def _annotate(
    adata: ad.AnnData, embedding: np.ndarray, iterations: list[Iteration], record: dict
) -> None:
    adata.obs["recall_clusters"] = categorical_labels(iterations[-1].labels, adata.obs_names)
    adata.obs["initial_clusters"] = categorical_labels(iterations[0].labels, adata.obs_names)
    adata.obsm["X_pca"] = embedding
    adata.uns["recall"] = record


def categorical_labels(labels: np.ndarray, index: pd.Index) -> pd.Series:
    """Cluster labels 0..K-1 as the categorical column a store keeps ("0", "1", ...)."""
    names = [str(i) for i in range(int(labels.max()) + 1)]
    return pd.Series(pd.Categorical.from_codes(labels, categories=names), index=index)


def _persist(array: da.Array) -> da.Array:
    """Keep ``array`` in worker memory for the passes and iterations that reuse it."""
    array = array.persist()
    futures = distributed.futures_of(array)  # none without a distributed client
    if futures:
        distributed.wait(futures)  # so that stage timings are honest
    return array


def _versions() -> dict[str, str]:
    found = {}
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "unknown"
    return found
