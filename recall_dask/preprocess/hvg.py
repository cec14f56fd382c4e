"""Highly variable genes, as Seurat's ``FindVariableFeatures`` ("vst") on the raw counts.

The variance of each gene is standardized by a loess trend of log10 variance on log10 mean
(span 0.3, degree 2), with standardized values clipped at sqrt(n_cells); the top genes by
that score are the variable genes. Where many genes share one mean the loess fit is singular
in places, and the trend is then fitted directly by pseudoinverse, as R's loess does.
"""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recall_dask import config
from recall_dask._chunks import sum_row_blocks
from recall_dask.errors import InputError
from recall_dask.preprocess.scale import batch_column_sums, mean_and_variance
from recall_dask.progress import compute

logger = logging.getLogger(__name__)

LOESS_SPAN = 0.3


def _vst_expected_variance(mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Loess (span 0.3, degree 2) of log10 variance on log10 mean, as Seurat's vst fit."""
    from skmisc.loess import loess

    expected = np.zeros_like(variance)
    varying = variance > 0
    if varying.sum() < 10:
        raise InputError(f"only {int(varying.sum())} genes vary across cells; need at least 10")
    x, y = np.log10(mean[varying]), np.log10(variance[varying])
    # The fit sees the points sorted, so its rounding, and the genes' ranks, do not depend on
    # the order of the genes in var.
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    fit = loess(x, y, span=LOESS_SPAN, degree=2)
    try:
        fit.fit()
        fitted = fit.outputs.fitted_values
    except ValueError:
        # Many genes seen in one or two cells share one mean, so some local fits are singular.
        # R's loess then warns and uses a pseudoinverse; scikit-misc's raises instead.
        logger.warning("the variance trend is singular in places; fitting it by pseudoinverse")
        fitted = local_quadratic_fit(x, y, LOESS_SPAN)
    expected[np.flatnonzero(varying)[order]] = 10**fitted
    return expected


def local_quadratic_fit(x: np.ndarray, y: np.ndarray, span: float) -> np.ndarray:
    """Loess fitted values computed directly at every ``x`` (degree 2, tricube weights over
    the ``floor(span * n)`` nearest points), solving each local least-squares problem by
    pseudoinverse, as R's loess does where the local design is singular (tied ``x``).

    Equals loess with ``surface = "direct"``; R's default interpolates between vertices of
    such fits, which differs from this by less than the trend's noise.
    """
    n = x.size
    q = max(3, int(np.floor(span * n)))
    fitted = np.empty(n)
    values, inverse = np.unique(x, return_inverse=True)
    for i, x0 in enumerate(values):
        distance = np.abs(x - x0)
        radius = np.partition(distance, q - 1)[q - 1]
        near = distance < radius if radius > 0 else distance == 0
        weight = np.sqrt((1 - (distance[near] / radius) ** 3) ** 3) if radius > 0 else 1.0
        offset = x[near] - x0
        design = np.stack([np.ones_like(offset), offset, offset**2], axis=1) * np.c_[weight]
        coef = np.linalg.lstsq(design, y[near] * weight, rcond=None)[0]
        fitted[inverse == i] = coef[0]
    return fitted


def _clipped_sums(
    block: sp.csr_matrix, mean: np.ndarray, sd: np.ndarray, clip: float
) -> np.ndarray:
    """Per-gene number, sum and sum of squares of the block's values whose standardized value
    ``(x - mean) / sd`` exceeds ``clip``."""
    block = sp.csr_matrix(block, dtype=np.float64)
    genes = block.indices
    with np.errstate(divide="ignore", invalid="ignore"):
        clipped = (block.data - mean[genes]) / sd[genes] > clip
    genes, values = genes[clipped], block.data[clipped]
    n_genes = mean.size
    return np.vstack(
        [
            np.bincount(genes, minlength=n_genes),
            np.bincount(genes, weights=values, minlength=n_genes),
            np.bincount(genes, weights=values * values, minlength=n_genes),
        ]
    )


def vst_standardized_variance(counts: da.Array, moments: np.ndarray) -> np.ndarray:
    """Seurat's vst score: variance of counts standardized by the loess-expected sd.

    Standardized values are clipped at sqrt(n_cells) (Seurat's ``clip.max = "auto"``). Every
    value below the clip, zeros included, adds ``(x - mean)^2 / sd^2``, which expands into the
    gene's sums of counts and of squared counts; a pass over the nonzero entries finds the few
    clipped ones. All those sums are exact integers, so the score, and the ranking of genes
    with tied scores, does not depend on the chunking.
    """
    n_cells = counts.shape[0]
    mean, sd, clip = _vst_trend(n_cells, moments)
    ((n_clipped, clipped_total, clipped_sq),) = compute(
        sum_row_blocks(counts, _clipped_sums, (3, mean.size), mean, sd, clip)
    )
    return _vst_score(n_cells, moments, mean, sd, clip, n_clipped, clipped_total, clipped_sq)


def _vst_trend(n_cells: int, moments: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Each gene's mean and loess-expected sd, and the clip of standardized values."""
    total, total_sq, _ = moments
    mean, variance = mean_and_variance(total, total_sq, n_cells)
    return mean, np.sqrt(_vst_expected_variance(mean, variance)), float(np.sqrt(n_cells))


def _vst_score(
    n_cells: int,
    moments: np.ndarray,
    mean: np.ndarray,
    sd: np.ndarray,
    clip: float,
    n_clipped: np.ndarray,
    clipped_total: np.ndarray,
    clipped_sq: np.ndarray,
) -> np.ndarray:
    """The vst score from the genes' sums and the sums of their clipped values."""
    total, total_sq, _ = moments
    below_total, below_sq = total - clipped_total, total_sq - clipped_sq
    below = below_sq - 2 * mean * below_total + (n_cells - n_clipped) * mean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (below / sd**2 + n_clipped * clip**2) / (n_cells - 1)
    score[sd == 0] = 0.0
    return score


def _batch_clipped_sums(
    blocks: list[tuple[sp.csr_matrix, int]],
    mean: np.ndarray,
    sd: np.ndarray,
    clip: np.ndarray,
    codes: np.ndarray,
) -> np.ndarray:
    """:func:`_clipped_sums` of each batch's cells (batches x 3 x genes), each batch with
    its own mean, sd and clip."""
    n_batches, n_genes = mean.shape
    total = np.zeros((n_batches, 3, n_genes))
    for block, first_row in blocks:
        block = sp.csr_matrix(block, dtype=np.float64)
        rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        batch, genes = codes[first_row + rows], block.indices
        with np.errstate(divide="ignore", invalid="ignore"):
            clipped = (block.data - mean[batch, genes]) / sd[batch, genes] > clip[batch]
        values = block.data[clipped]
        moments = (np.ones_like(values), values, values * values)
        sums = batch_column_sums(batch[clipped], genes[clipped], moments, (n_batches, n_genes))
        total += sums
    return total


def batch_vst_scores(counts: da.Array, moments: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The vst score of every gene within every batch (batches x genes): each batch's own
    trend and clip, from its moments (:func:`~recall_dask.preprocess.scale.batch_moments`)
    and one pass that finds every batch's clipped values at once."""
    n_batches = moments.shape[0]
    n_cells = np.bincount(codes, minlength=n_batches)
    trends = [_vst_trend(int(n_cells[b]), moments[b]) for b in range(n_batches)]
    mean, sd = np.stack([t[0] for t in trends]), np.stack([t[1] for t in trends])
    clip = np.array([t[2] for t in trends])
    (clipped,) = compute(
        sum_row_blocks(
            counts,
            _batch_clipped_sums,
            (n_batches, 3, mean.shape[1]),
            mean,
            sd,
            clip,
            np.asarray(codes, dtype=np.int64),
            batch=config.get("split-every"),
            first_rows=True,
        )
    )
    return np.stack(
        [
            _vst_score(int(n_cells[b]), moments[b], mean[b], sd[b], clip[b], *clipped[b])
            for b in range(n_batches)
        ]
    )


def top_genes_across_batches(scores: np.ndarray, names: pd.Index, n_top: int) -> np.ndarray:
    """Indices, in ``var`` order, of the ``n_top`` genes variable in the most batches, as
    Seurat's ``SelectIntegrationFeatures`` and scanpy's ``highly_variable_genes(flavor=
    "seurat_v3_paper", batch_key=...)`` choose them: each batch ranks its genes by vst score
    (ties by name) and keeps its top ``n_top`` that vary; genes rank by the number of batches
    that keep them, ties by the median of their ranks in those batches, then by name."""
    names = np.asarray(names, dtype=str)
    n_batches, n_genes = scores.shape
    ranks = np.full((n_batches, n_genes), np.nan)
    for b in range(n_batches):
        order = np.lexsort((names, -scores[b]))
        kept = order[: min(n_top, int((scores[b] > 0).sum()))]
        ranks[b, kept] = np.arange(kept.size)
    n_kept = np.sum(~np.isnan(ranks), axis=0)
    with np.errstate(all="ignore"):
        median_rank = np.where(
            n_kept > 0, np.nanmedian(np.where(n_kept > 0, ranks, 0), axis=0), np.inf
        )
    order = np.lexsort((names, median_rank, -n_kept))
    return _enough(np.sort(order[: min(n_top, int((n_kept > 0).sum()))]))


def select_variable_genes(
    counts: da.Array,
    var: pd.DataFrame,
    n_top: int,
    moments: np.ndarray,
    batches: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Indices of the variable genes: ``var['highly_variable']`` if given, else vst's top genes,
    or with ``batches`` (each cell's batch code and the batches' moments, batches x 3 x
    genes) the genes variable in the most batches (:func:`top_genes_across_batches`).

    Genes are returned in ``var`` order, not in Seurat's rank order: the order only decides
    which random stream each artificial gene gets, and ``var`` order keeps that independent of
    how the scores rank.
    Genes constant over all cells are never selected: they would carry no signal.
    """
    if "highly_variable" not in var.columns:
        if batches is not None:
            codes, batch_moments = batches
            scores = batch_vst_scores(counts, batch_moments, codes)
            return top_genes_across_batches(scores, var.index, n_top)
        return top_vst_genes(counts, var.index, n_top, moments)
    chosen = np.flatnonzero(var["highly_variable"].to_numpy(dtype=bool))
    logger.info("using %d genes flagged in var['highly_variable']", chosen.size)
    return _enough(chosen)


def top_vst_genes(counts: da.Array, names: pd.Index, n_top: int, moments: np.ndarray) -> np.ndarray:
    """Indices, in ``var`` order, of the ``n_top`` genes with the highest vst score that vary.

    Genes of equal score rank by name (``names``, the var names), so the same genes are chosen
    however ``var`` is ordered; Seurat takes the first in ``var`` order. Sparse genes often
    tie (all genes seen once with one count share a score), so this matters where the cut
    falls inside such a tie.
    """
    score = vst_standardized_variance(counts, moments)
    ranked = np.lexsort((np.asarray(names, dtype=str), -score))
    return _enough(np.sort(ranked[: min(n_top, int((score > 0).sum()))]))


def _enough(chosen: np.ndarray) -> np.ndarray:
    if chosen.size < 2:
        raise InputError(f"only {chosen.size} variable genes; need at least 2")
    return chosen
