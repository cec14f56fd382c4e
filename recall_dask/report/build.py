"""Writing a report from a finished store: the UMAP and the standard clustering it needs,
computed once and stored beside the results, then the page."""

from __future__ import annotations

import importlib.util
import logging
import os

import dask.array as da
import numpy as np
import pandas as pd

from recall_dask.api import categorical_labels
from recall_dask.draw import embedding as pca_embedding
from recall_dask.errors import InputError
from recall_dask.graph import cluster_graph
from recall_dask.graph.build import neighbor_graph
from recall_dask.io import open_counts, read_results, write_results
from recall_dask.io.results import DEFAULT_KEY, stored_keys
from recall_dask.io.storage import Location, StorageOptions
from recall_dask.params import RecallParams
from recall_dask.preprocess.normalize import log_normalized
from recall_dask.progress import compute
from recall_dask.report.page import render_report

logger = logging.getLogger(__name__)

#: Seurat's ``RunUMAP`` defaults (uwot): 30 neighbors, min_dist 0.3, cosine distance, and its
#: fixed ``seed.use = 42``. A seed makes umap-learn run single-threaded, and so deterministic.
UMAP_OPTIONS = {"n_neighbors": 30, "min_dist": 0.3, "metric": "cosine", "random_state": 42}


def require_extra() -> None:
    """Raise InputError unless the report's plotting libraries are installed."""
    for module, package in (("umap", "umap-learn"), ("matplotlib", "matplotlib")):
        if importlib.util.find_spec(module) is None:
            raise InputError(f"the report needs {package}: pip install 'recall-dask[report]'")


def report_path_for(store: str | os.PathLike) -> str:
    """Where the report of ``store`` goes by default: ``OUT.zarr`` -> ``OUT.html`` beside it."""
    text = os.fspath(store).rstrip("/")
    return (text[: -len(".zarr")] if text.lower().endswith(".zarr") else text) + ".html"


def write_report(
    store: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    key_added: str = DEFAULT_KEY,
    compare_default: bool = False,
    storage_options: StorageOptions = None,
) -> Location:
    """Write the HTML report of the recall results under ``key_added`` in ``store`` to ``out``
    (a path or URL; default :func:`report_path_for`) and return where it went. Stores written
    before ``key_added`` existed are read under their old keys
    (:func:`~recall_dask.io.results.stored_keys`).

    ``compare_default`` adds the standard clustering of the original data, without artificial
    genes, at the starting resolution: what a user would have got without recall. The UMAP
    and that clustering are added to the store unless it already holds them. Runs on the
    active Dask client, if any.
    """
    require_extra()
    adata = read_results(store, storage_options=storage_options)
    keys = stored_keys(adata, store, key_added)
    record = adata.uns[keys.record]
    # Runs made before --neighbors existed searched exactly.
    params = RecallParams(**{"neighbors": "exact", **record["params"]})
    missing_umap = keys.umap not in adata.obsm
    if missing_umap:
        embedding = adata.obsm[keys.graph_embedding(adata.obsm)]
        adata.obsm[keys.umap] = umap_embedding(embedding, params.dims)
    missing_default = compare_default and keys.default not in adata.obs
    if missing_default:
        counts = open_counts(store, storage_options=storage_options).X
        labels = default_clusters(counts, adata.var, record["variable_genes"], params)
        adata.obs[keys.default] = categorical_labels(labels, adata.obs_names)
    if missing_umap or missing_default:
        write_results(
            store,
            obs=adata.obs,
            obsm={keys.umap: adata.obsm[keys.umap]},
            uns={},
            storage_options=storage_options,
        )
    target = Location.of(report_path_for(store) if out is None else out, storage_options)
    page = render_report(
        adata,
        keys,
        title=str(Location.of(store, storage_options)),
        compare_default=compare_default,
    )
    try:
        target.fs.pipe_file(target.path, page.encode("utf-8"))
    except OSError as error:
        raise InputError(f"cannot write the report {target}: {error}") from error
    logger.info("wrote the report %s", target)
    return target


def umap_embedding(pca: np.ndarray, dims: int) -> np.ndarray:
    """2-D UMAP of the first ``dims`` PCs, as Seurat's ``RunUMAP(dims = 1:dims)``."""
    import umap

    options = {**UMAP_OPTIONS, "n_neighbors": min(UMAP_OPTIONS["n_neighbors"], len(pca) - 1)}
    logger.info("UMAP of %d cells on %d PCs ...", len(pca), dims)
    model = umap.UMAP(n_components=2, n_jobs=1, **options)
    return model.fit_transform(np.ascontiguousarray(pca[:, :dims], dtype=np.float32))


def default_clusters(
    counts: da.Array, var: pd.DataFrame, variable_genes: np.ndarray, params: RecallParams
) -> np.ndarray:
    """The standard clustering without recall: the run's variable genes of the original counts,
    log-normalized (library size of all genes), scaled, exact PCA, kNN and SNN on ``dims`` PCs,
    and one clustering at ``resolution_start``. Streams row chunks like the run itself."""
    genes = np.flatnonzero(var.index.isin(variable_genes))
    if genes.size != len(variable_genes):
        raise InputError("the store's variable genes are not unique names in var")
    logger.info(
        "standard clustering of the %d variable genes, without artificial genes", genes.size
    )
    (embedding,) = compute(pca_embedding(log_normalized(counts, genes, params.target_sum), params))
    return cluster_graph(
        neighbor_graph(embedding, params),
        params.resolution_start,
        algorithm=params.algorithm,
        seed=0,
        n_starts=params.louvain_starts,
        n_iterations=params.louvain_iterations,
    )
