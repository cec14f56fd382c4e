"""recall, as ``FindClustersRecall``: artificial null genes, and the knockoff filter as the
pair test.

The inputs, once: the variable genes and the null fitted to their counts. Then per draw: the
log-normalized [genes | artificial genes] matrix, computed once and kept, embedded by rows
and tested pair by pair by tiles. A pair of clusters is real when the knockoff+ filter
selects some gene: the gene's rank-sum test between the two clusters beats its artificial
twin's by enough (:mod:`recall_dask.stats.knockoff`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import dask.array as da
import numpy as np
import pandas as pd

from recall_dask.io.checkpoints import NO_CHECKPOINTS, NoCheckpoints
from recall_dask.io.storage import StorageOptions
from recall_dask.methods.draws import Prepared, draw_seeds, for_each_draw, kept, work_name
from recall_dask.nulls import NullModel, fit_null
from recall_dask.preprocess.depth import depth_outside, library_sizes, size_factors
from recall_dask.preprocess.hvg import select_variable_genes
from recall_dask.preprocess.normalize import augmented_log_normalized
from recall_dask.preprocess.scale import batch_moments, column_moments
from recall_dask.progress import compute, stage
from recall_dask.stats.knockoff import knockoff_statistics, n_selected_per_pair
from recall_dask.stats.markers import Markers
from recall_dask.stats.ranksums import cluster_pairs, pair_matrix, pairwise_rank_sum_tests

if TYPE_CHECKING:
    from recall_dask.io.batches import Batches
    from recall_dask.params import RecallParams


def selected_gene_counts(
    data: da.Array,
    labels: np.ndarray,
    n_genes: int,
    fdr: float,
    strata: np.ndarray | None = None,
) -> tuple[np.ndarray, Markers]:
    """Clusters x clusters matrix of genes the knockoff+ filter selects for each pair, and
    each pair's strongest selected genes.

    ``data`` holds the log-normalized variable genes in its first ``n_genes`` columns and their
    artificial twins, in the same order, in the next ``n_genes``. With ``strata`` (a batch
    per cell) every gene and twin is tested by van Elteren's test within them.
    """
    n_clusters = int(labels.max()) + 1
    pairs = cluster_pairs(n_clusters)
    if n_clusters == 1:
        nothing = np.zeros((0, n_genes))
        return pair_matrix(np.empty(0, dtype=np.int64), 1), Markers.strongest(
            nothing, nothing, pairs, fdr
        )
    log_p, direction = pairwise_rank_sum_tests(data, labels, n_clusters, strata=strata)
    w = knockoff_statistics(log_p[:, :n_genes], log_p[:, n_genes:])
    markers = Markers.strongest(w, direction[:, :n_genes], pairs, fdr)
    return pair_matrix(n_selected_per_pair(w, fdr), n_clusters), markers


def recall_inputs(
    counts: da.Array,
    var: pd.DataFrame,
    params: RecallParams,
    timings: dict[str, float],
    work: Path | str | None,
    storage_options: StorageOptions,
    checkpoints: NoCheckpoints = NO_CHECKPOINTS,
    batches: Batches | None = None,
) -> list[Prepared]:
    """``FindClustersRecall``: the variable genes and their nulls (with ``depth`` "cell",
    drawn with each cell's size factor), once; then per draw the
    log-normalized [genes | artificial genes] matrix, computed once and kept
    (:func:`~recall_dask.methods.draws.kept`), embedded by rows and tested pair by pair with
    knockoffs by tiles. With ``batches``, the variable genes are those variable in the most
    batches, each batch gets its own null, and with ``batch_test`` "within" the pairs are
    tested within batches. Stages that ``checkpoints`` lists as finished are reused."""
    codes = None if batches is None else batches.codes

    def fitted() -> dict[str, np.ndarray]:
        with stage("variable genes", timings):
            if batches is None:
                moments, totals = compute(column_moments(counts), library_sizes(counts))
                grouped = None
            else:
                per_batch = batch_moments(counts, codes, batches.n_batches)
                by_batch, totals = compute(per_batch, library_sizes(counts))
                moments, grouped = by_batch.sum(axis=0), (codes, by_batch)
            genes = select_variable_genes(counts, var, params.n_hvg, moments, grouped)
        with stage("null fits", timings):
            factors = None
            if params.depth == "cell":
                factors = size_factors(depth_outside(counts, genes, totals))
            fitted_moments = moments[:, genes] if grouped is None else by_batch[:, :, genes]
            null = fit_null(
                counts[:, genes], params.null_method, params.seed, fitted_moments, factors, codes
            )
        return {"genes": genes, **null.arrays()}

    fit = checkpoints.arrays("genes", fitted)
    genes, null = fit["genes"], NullModel.from_arrays(fit)

    def prepare(draw: int) -> Prepared:
        seed = draw_seeds(params.seed, params.draws)[draw]
        data = augmented_log_normalized(counts, genes, null, seed, params.target_sum)
        name = work_name("augmented", draw, params.draws)
        rows, tiles = kept(data, work, name, storage_options, checkpoints)
        strata = codes if params.batch_test == "within" else None
        test = partial(
            selected_gene_counts, tiles, n_genes=genes.size, fdr=params.fdr, strata=strata
        )
        return Prepared(genes, rows, test)

    with stage("artificial genes and normalization", timings):
        return for_each_draw(prepare, range(params.draws))
