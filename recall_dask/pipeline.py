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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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
import zarr

from recall_dask import io
from recall_dask.calibrate import PairTest, Step, calibrate_draws, selected_gene_counts
from recall_dask.consensus import Consensus, consensus
from recall_dask.countsplit import counts_half, log_normalized_half, marker_gene_counts
from recall_dask.errors import InputError
from recall_dask.graph import SNNGraph, nearest_neighbors, shared_nearest_neighbors
from recall_dask.io.storage import Location, StorageOptions
from recall_dask.io.workstore import work_store, write_tiles
from recall_dask.nulls import fit_null
from recall_dask.params import RecallParams
from recall_dask.pca import cell_embeddings, pca_from_gram, scaled_gram
from recall_dask.preprocess.hvg import select_variable_genes, top_vst_genes
from recall_dask.preprocess.normalize import augmented_log_normalized
from recall_dask.preprocess.scale import column_moments, feature_scaling
from recall_dask.progress import compute, reporting
from recall_dask.stats.ranksums import feature_block_for

logger = logging.getLogger(__name__)

#: Draws prepared at the same time: while one computes its PCA in the client, another's
#: passes keep the workers busy; more would only hold more Gram partials in memory.
DRAWS_AT_ONCE = 2

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
    seconds = time.perf_counter() - start
    timings[name] = round(timings.get(name, 0.0) + seconds, 3)  # count splitting: per draw
    logger.info("%s done in %.2f s", name, seconds)


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


def draw_seeds(seed: int, n_draws: int) -> list[int]:
    """The seed of every draw: ``seed`` itself for one draw (R's procedure), else ``n_draws``
    child seeds of it (numpy's ``SeedSequence.spawn``), so the draws are independent streams."""
    if n_draws == 1:
        return [seed]
    children = np.random.SeedSequence(seed).spawn(n_draws)
    return [int(child.generate_state(1, np.uint32)[0]) for child in children]


def _work_name(stem: str, draw: int, n_draws: int) -> str:
    return f"{stem}.zarr" if n_draws == 1 else f"{stem}-{draw}.zarr"


@dataclass(frozen=True)
class _Prepared:
    """What a method hands to the shared stages, for one draw."""

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
) -> list[_Prepared]:
    """``FindClustersRecall``: the variable genes and their nulls, once; then per draw the
    log-normalized [genes | artificial genes] matrix, computed once and kept (:func:`_kept`),
    embedded by rows and tested pair by pair with knockoffs by tiles."""
    with _stage("variable genes", timings):
        (moments,) = compute(column_moments(counts))
        genes = select_variable_genes(counts, var, params.n_hvg, moments)
    with _stage("null fits", timings):
        null = fit_null(counts[:, genes], params.null_method, params.seed)

    def prepare(draw: int) -> _Prepared:
        seed = draw_seeds(params.seed, params.draws)[draw]
        data = augmented_log_normalized(counts, genes, null, seed, params.target_sum)
        name = _work_name("augmented", draw, params.draws)
        rows, tiles = _kept(data, work, name, storage_options)
        test = partial(selected_gene_counts, tiles, n_genes=genes.size, fdr=params.fdr)
        return _Prepared(genes, rows, test)

    with _stage("artificial genes and normalization", timings):
        return _for_each_draw(prepare, range(params.draws))


def _countsplit_inputs(
    counts: da.Array,
    var: pd.DataFrame,
    params: RecallParams,
    timings: dict[str, float],
    work: Path | str | None,
    storage_options: StorageOptions,
) -> list[_Prepared]:
    """``FindClustersCountsplit``, per split: embed the train half's variable genes, test pairs
    for marker genes on the test half of all genes (:mod:`recall_dask.countsplit`).

    The variable genes are vst's top ``n_hvg`` of the train half; ``var['highly_variable']`` is
    not used, since genes chosen on all counts would let the test half shape the clusters.
    """
    prepared = []
    for draw, seed in enumerate(draw_seeds(params.seed, params.draws)):
        with _stage("variable genes", timings):
            train = counts_half(counts, seed, "train")
            moments = compute(column_moments(train))[0]
            genes = top_vst_genes(train, var.index, params.n_hvg, moments)
        with _stage("count splitting and normalization", timings):
            train_genes = log_normalized_half(counts, seed, "train", params.target_sum, genes)
            name = _work_name("train", draw, params.draws)
            rows, _ = _kept(train_genes, work, name, storage_options)
            test = log_normalized_half(counts, seed, "test", params.target_sum)
            name = _work_name("test", draw, params.draws)
            _, test_tiles = _kept(test, work, name, storage_options)
        pair_test = partial(_marker_test, test_tiles, alpha=params.fdr)
        prepared.append(_Prepared(genes, rows, pair_test))
    return prepared


def _marker_test(test_tiles: da.Array, labels: np.ndarray, alpha: float) -> tuple[np.ndarray, None]:
    return marker_gene_counts(test_tiles, labels, alpha=alpha), None


_METHODS = {"recall": _recall_inputs, "countsplit": _countsplit_inputs}


def embed(data: da.Array, params: RecallParams) -> np.ndarray:
    """Exact PCA of the scaled data (augmented, or the train half's variable genes), gathered
    as cells x PCs."""
    scaling = feature_scaling(data, params.scale_max)
    pca = pca_from_gram(scaled_gram(data, scaling), min(params.n_pcs, data.shape[0]))
    return compute(cell_embeddings(data, scaling, pca))[0]


def _kept_embedding(
    embedding: np.ndarray,
    draw: int,
    params: RecallParams,
    work: Path | str | None,
    storage_options: StorageOptions,
) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """The PCs the graph needs, and how to get the whole embedding back. With several draws
    and a work directory, the whole embedding waits there: only the medoid draw's is kept
    in the end, and ten draws' embeddings of many cells would crowd the client's memory."""
    if params.draws == 1 or work is None:
        return embedding[:, : params.dims], lambda: embedding
    location = Location.of(work, storage_options).child(f"embedding-{draw}.zarr")
    stored = zarr.create_array(
        location.zarr_store(), shape=embedding.shape, dtype=embedding.dtype, zarr_format=2
    )
    stored[:] = embedding
    return embedding[:, : params.dims], lambda: stored[:]


def neighbor_graph(embedding: np.ndarray, params: RecallParams) -> SNNGraph:
    """The SNN graph of a run's embedding, as Seurat's ``FindNeighbors``, in the form that
    clustering reads (the CSR matrix is not kept: with many draws, graphs add up)."""
    knn = nearest_neighbors(embedding[:, : params.dims], params.k_neighbors, params.neighbors)
    return SNNGraph.from_snn(shared_nearest_neighbors(knn, params.snn_prune))


def _for_each_draw(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``func`` of each draw's item, up to :data:`DRAWS_AT_ONCE` draws at a time. One draw runs
    in this thread, with its progress bars; several run on threads, whose bars would garble
    each other's."""
    if len(items) == 1:
        return [func(items[0])]
    with ThreadPoolExecutor(DRAWS_AT_ONCE, thread_name_prefix="draw") as pool:
        return list(pool.map(func, items))


@dataclass(frozen=True)
class RecallResult:
    """What a run adds to the AnnData: final and first clusters, the embedding, each cell's
    confidence (several draws only) and the ``uns['recall']`` record."""

    labels: np.ndarray
    initial_labels: np.ndarray
    embedding: np.ndarray
    confidence: np.ndarray | None
    record: dict[str, Any]


def run_recall(
    counts: da.Array,
    var: pd.DataFrame,
    params: RecallParams,
    store: Path | str | None = None,
    storage_options: StorageOptions = None,
) -> RecallResult:
    """Calibrated clusters, embedding and the ``uns['recall']`` record for a count matrix, by
    ``params.method``, over ``params.draws`` draws.

    ``store`` is the path or URL of the work directory for the normalized matrices; ``None``
    keeps them in worker memory. With several draws the answer is the consensus of the draws'
    clusterings at the accepted resolution (:mod:`recall_dask.consensus`); the embedding, the
    first clusters, the variable genes and the markers are the medoid draw's.
    """
    n_cells = counts.shape[0]
    if n_cells < params.k_neighbors:
        raise InputError(f"fewer cells ({n_cells}) than neighbours (k = {params.k_neighbors})")
    timings: dict[str, float] = {}
    draws = _METHODS[params.method](counts, var, params, timings, store, storage_options)
    with _stage("scaling and PCA", timings):

        def embedded(m: int) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
            return _kept_embedding(embed(draws[m].rows, params), m, params, store, storage_options)

        embeddings = _for_each_draw(embedded, range(len(draws)))
    with _stage("neighbour graph", timings):
        graphs = _for_each_draw(lambda kept: neighbor_graph(kept[0], params), embeddings)
    with _stage("calibration", timings):
        steps = calibrate_draws(graphs, [draw.pair_test for draw in draws], params)
    final = steps[-1]
    if len(draws) == 1:
        (last,) = final.draws
        medoid, labels, confidence = 0, last.labels, None
        n_selected, markers = last.n_selected, last.markers
    else:
        with _stage("consensus", timings):
            agreed = consensus([draw.labels for draw in final.draws])
            medoid, labels, confidence = agreed.medoid, agreed.labels, agreed.confidence
            n_selected, markers = draws[medoid].pair_test(labels)
    genes = var.index[draws[medoid].genes]
    record = {
        "method": params.method,
        "params": params.as_dict(),
        "seed": params.seed,
        "versions": _versions(),
        "variable_genes": np.asarray(genes, dtype=str),
        "iterations": {str(i): _step_summary(step) for i, step in enumerate(steps)},
        "n_iterations": len(steps),
        "resolution": final.resolution,
        "n_clusters": int(labels.max()) + 1,
        "n_selected": n_selected,
        # Two parallel arrays, because stores sort dict keys and the stage order matters.
        "stage_seconds": {
            "stage": np.array(list(timings), dtype=str),
            "seconds": np.array(list(timings.values())),
        },
    }
    if markers is not None:  # count splitting has no knockoff W
        record["markers"] = markers.record(genes)
    if len(draws) > 1:
        record["stability"] = _stability(steps, agreed, params)
    initial = steps[0].draws[medoid].labels
    return RecallResult(labels, initial, embeddings[medoid][1](), confidence, record)


def _step_summary(step: Step) -> dict[str, Any]:
    """One draw: R's trace of the iteration; several: each draw's clusters and verdict."""
    if len(step.draws) == 1:
        return step.draws[0].summary()
    return {
        "resolution": step.resolution,
        "n_clusters": np.array([draw.n_clusters for draw in step.draws]),
        "passed": step.passed,
        "n_passed": int(step.passed.sum()),
        "accepted": step.accepted,
    }


def _stability(steps: list[Step], agreed: Consensus, params: RecallParams) -> dict[str, Any]:
    """``uns['recall']['stability']``: the draws and how far they agree."""
    return {
        "draw_seeds": np.array(draw_seeds(params.seed, params.draws), dtype=np.int64),
        "medoid": agreed.medoid,
        "needed": steps[-1].needed,
        "resolutions": np.array([step.resolution for step in steps]),
        "n_clusters": np.array([[draw.n_clusters for draw in step.draws] for step in steps]),
        "passed": np.array([step.passed for step in steps]),
        "cluster_stability": agreed.cluster_stability,
        "pair_separation": agreed.pair_separation,
    }


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
            _annotate(data, run_recall(counts, data.var, params, store, storage_options))
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
        _annotate(adata, run_recall(adata.X, adata.var, params, work, storage_options))
    io.write_results(
        store,
        obs=adata.obs,
        obsm={"X_pca": adata.obsm["X_pca"]},
        uns={"recall": adata.uns["recall"]},
        storage_options=storage_options,
    )
    return adata


def _annotate(adata: ad.AnnData, result: RecallResult) -> None:
    adata.obs["recall_clusters"] = categorical_labels(result.labels, adata.obs_names)
    adata.obs["initial_clusters"] = categorical_labels(result.initial_labels, adata.obs_names)
    if result.confidence is not None:
        adata.obs["recall_confidence"] = result.confidence
    adata.obsm["X_pca"] = result.embedding
    adata.uns["recall"] = result.record


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
