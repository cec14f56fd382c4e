"""Count splitting, as ``FindClustersCountsplit`` of the R package: cluster one half of the
counts, test the clusters on the other half.

**The split.** Every count X is thinned into ``train`` and ``test = X - train``, two folds
with epsilon 1/2 as ``countsplit::countsplit``. With ``--split poisson`` (``countsplit``'s
default) ``train ~ Binomial(X, 1/2)``: under a Poisson model the halves are independent, so
marker genes found on the test half are not "confirmed" merely because the train half chose
the clusters. UMI counts are overdispersed, and then the binomial halves share the gene's
noise in the cell. ``--split nb`` (default) splits each count of a gene of negative binomial
size theta by the Dirichlet-multinomial: ``train ~ Binomial(X, p)``, ``p ~ Beta(theta / 2,
theta / 2)`` drawn per count, which makes the halves of NB(mu, theta) counts independent
NB(mu / 2, theta / 2) for any mean mu (Neufeld et al. 2024, ``countsplit``'s ``overdisps``),
so also when the mean varies with the cell's depth. Each gene's theta is fitted once to all
counts, by maximum likelihood with each cell's library size as offset (the ``nb`` null's fit,
:func:`recall_dask.nulls.fit_null`), then taken from the trend of theta against the genes'
means (:func:`overdispersion_trend`); a gene whose trend is Poisson gets the binomial split. The
draws are keyed by ``--seed``, a stream constant and fixed blocks of absolute rows
(``SeedSequence([seed, STREAM, block])``, as the artificial genes of :mod:`recall_dask.nulls`);
within a block, each entry takes its own counter-based random words (:func:`binomial_half`).
numpy's sequential ``binomial`` would use a data-dependent share of the block's stream, so a
chunk starting mid-block could not resume it; counter-based bits make each half of any row
chunk reproducible on any worker, for any chunking, and the two halves always add up to X.

**The pair test** is Seurat v5's ``FindMarkers(test, ident.1, ident.2)`` with its defaults, as
``FindClustersCountsplit`` calls it (satijalab/seurat ``R/differential_expression.R``:
``FindMarkers.default``, ``FoldChange.Assay``, ``WilcoxDETest``), on the log-normalized test
half of all genes:

* ``min.pct = 0.01``: a gene is tested if ``max(pct.1, pct.2) >= 0.01``, ``pct`` being the
  fraction of a cluster's cells with a nonzero value, rounded to 3 decimals.
* ``logfc.threshold = 0.1``: ``|avg_log2FC| >= 0.1``, where Seurat v5 (``FoldChange.Assay`` on
  the ``data`` layer of a LogNormalize assay) takes
  ``avg_log2FC = log2((sum(expm1(x) in 1) + 1) / n1) - log2((sum(expm1(x) in 2) + 1) / n2)``.
  Seurat v4 took ``log2(mean(expm1(x)) + 1)`` per cluster; we follow v5.
* ``test.use = "wilcox"``: the two-sided rank-sum test with tie and continuity correction
  (presto's ``wilcoxauc``, Seurat's default when presto is installed;
  :mod:`recall_dask.stats.ranksums`).
* ``p_val_adj = min(1, p * nrow(object))``: Bonferroni over all genes of the test object, not
  only the tested ones. A pair selects the genes with ``p_val_adj < alpha`` (R: 0.05, our
  ``--fdr``).

Both halves of a cell share its depth, so a train-half split of deep from shallow cells shows
in the test half too. With ``--depth cell`` (default) the rank-sum test is van Elteren's,
within 20 quantile groups of library size
(:class:`~recall_dask.stats.ranksums.StratifiedGroups`), so such a difference adds nothing;
the filters stay Seurat's.

The statistics of the filters (detection counts and sums of ``expm1`` per cluster) come from
the same grouping of a feature block that the Wilcoxon test uses, so one read of the test
matrix per iteration serves everything, and each task returns only its per-pair counts.

**The inputs** (:func:`countsplit_inputs`), per split: the train half's variable genes,
log-normalized, to embed and cluster; the log-normalized test half of all genes, to test.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import dask.array as da
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recall_dask._chunks import RNG_BLOCK_ROWS, map_row_blocks, rng_block_spans
from recall_dask.io.checkpoints import NO_CHECKPOINTS, NoCheckpoints
from recall_dask.io.storage import StorageOptions
from recall_dask.methods.draws import Prepared, draw_seeds, kept, work_name
from recall_dask.nulls import fit_null
from recall_dask.preprocess.depth import (
    DEPTH_STRATA,
    depth_strata,
    library_sizes,
    size_factors,
)
from recall_dask.preprocess.hvg import batch_vst_scores, top_genes_across_batches, top_vst_genes
from recall_dask.preprocess.normalize import log_normalize
from recall_dask.preprocess.scale import batch_moments, column_moments
from recall_dask.progress import compute, stage
from recall_dask.stats.ranksums import (
    ClusterGroups,
    StratifiedGroups,
    pair_matrix,
    per_feature_block,
)

if TYPE_CHECKING:
    from recall_dask.io.batches import Batches
    from recall_dask.params import RecallParams

STREAM = 0x63737074  # "cspt": keeps the split apart from other streams of the same seed
PARTS = ("train", "test")
#: Seurat v5 ``FindMarkers`` defaults.
MIN_PCT = 0.01
LOGFC_THRESHOLD = 0.1
_COUNTS_META = sp.csr_matrix((0, 0), dtype=np.float32)


# --- numba kernel: Binomial(n, 1/2) thinning from counter-based random bits ----------------

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
#: Random words reserved per matrix entry: counts below 64 * 2**20 (float32 counts are exact
#: integers only below 2**24 anyway).
_WORDS_PER_ENTRY = np.uint64(1 << 20)


@numba.njit(nogil=True, cache=True, inline="always")
def _splitmix64(state: np.uint64) -> np.uint64:
    """SplitMix64's output function: a bijective 64-bit mix with full avalanche."""
    z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(nogil=True, cache=True, inline="always")
def _popcount(x: np.uint64) -> int:
    """Number of set bits of a uint64 (branch-free SWAR count)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(nogil=True, cache=True, inline="always")
def _word(key: np.uint64, position: np.uint64) -> np.uint64:
    """The random word at ``position`` of the stream ``key``."""
    return _splitmix64(key + position * _GOLDEN_GAMMA)


@numba.njit(nogil=True, cache=True, inline="always")
def _uniform(key: np.uint64, position: np.uint64) -> float:
    """A uniform in (0, 1): the top 53 bits of the word at ``position``, centred."""
    return (float(_word(key, position) >> np.uint64(11)) + 0.5) * 2.0**-53


@numba.njit(nogil=True, cache=True, inline="always")
def _fair_half(key: np.uint64, position: np.uint64, count: int) -> int:
    """Binomial(count, 1/2): the ones among ``count`` random bits, taken from the words after
    ``position``."""
    ones = 0
    while count > 0:
        position += np.uint64(1)
        word = _word(key, position)
        if count < 64:
            word >>= np.uint64(64 - count)
        ones += _popcount(word)
        count -= 64
    return ones


@numba.njit(nogil=True, cache=True, inline="always")
def _log_gamma(key: np.uint64, position: np.uint64, shape: float) -> tuple[float, np.uint64]:
    """The log of a Gamma(``shape``, 1) variate from the words after ``position``, and the
    last position used: Marsaglia and Tsang's method (normals by Box-Muller), with
    ``G(a) = G(a + 1) U^(1/a)`` below shape 1, in log space so that tiny shapes stay finite."""
    boosted = shape + 1.0 if shape < 1.0 else shape
    d = boosted - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        u1, u2 = _uniform(key, position + np.uint64(1)), _uniform(key, position + np.uint64(2))
        position += np.uint64(3)
        x = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        if math.log(_uniform(key, position)) < 0.5 * x * x + d - d * v + d * math.log(v):
            break
    log_g = math.log(d) + math.log(v)
    if shape < 1.0:
        position += np.uint64(1)
        log_g += math.log(_uniform(key, position)) / shape
    return log_g, position


#: Trials per inversion of the binomial: (1/2)^512 is far above the float64 underflow.
_BINOMIAL_STEP = 512


@numba.njit(nogil=True, cache=True, inline="always")
def _binomial(key: np.uint64, position: np.uint64, count: int, p: float) -> int:
    """Binomial(``count``, ``p``) from the words after ``position``: inversion of the pmf
    by its recurrence, ``_BINOMIAL_STEP`` trials at a time, with ``p <= 1/2`` by symmetry."""
    flipped = p > 0.5
    q = 1.0 - p if flipped else p
    ratio = q / (1.0 - q)
    successes = 0
    left = count
    while left > 0:
        trials = min(left, _BINOMIAL_STEP)
        position += np.uint64(1)
        u = _uniform(key, position)
        pmf = (1.0 - q) ** trials
        cdf = pmf
        k = 0
        while cdf < u and k < trials:
            pmf *= (trials - k) / (k + 1.0) * ratio
            k += 1
            cdf += pmf
        successes += k
        left -= trials
    return count - successes if flipped else successes


@numba.njit(nogil=True, cache=True)
def binomial_half(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    first_row: int,
    keys: np.ndarray,
    block_rows: int,
    n_cols: int,
    overdispersion: np.ndarray,
) -> np.ndarray:
    """The train half of every stored count n of a CSR row block.

    Poisson splitting (``overdispersion[j]`` infinite): Binomial(n, 1/2), the ones among n
    random bits. Negative binomial splitting (gene j of size ``overdispersion[j]``): the
    Dirichlet-multinomial split, Binomial(n, p) with ``p ~ Beta(theta / 2, theta / 2)``
    drawn per entry.

    Row ``i`` is absolute row ``r = first_row + i``, in RNG block ``r // block_rows`` whose key
    is ``keys[r // block_rows - first_row // block_rows]``. The entry in column ``j`` takes its
    randomness from SplitMix64 words of that key at its own positions
    ``((r % block_rows) * n_cols + j) * 2**20 + w``, ``w = 1, 2, ...``, so a draw depends only on
    the key, the entry's place, its count and its gene's size: never on the chunking or on
    other entries.
    """
    out = np.empty(data.size, dtype=data.dtype)
    first_block = first_row // block_rows
    for i in range(indptr.size - 1):
        row = first_row + i
        key = keys[row // block_rows - first_block]
        base = np.uint64((row % block_rows) * n_cols)
        for k in range(indptr[i], indptr[i + 1]):
            count = np.int64(data[k])
            position = (base + np.uint64(indices[k])) * _WORDS_PER_ENTRY
            theta = overdispersion[indices[k]]
            if np.isinf(theta):
                out[k] = _fair_half(key, position, count)
                continue
            log_a, position = _log_gamma(key, position, 0.5 * theta)
            log_b, position = _log_gamma(key, position, 0.5 * theta)
            p = 1.0 / (1.0 + math.exp(min(log_b - log_a, 700.0)))
            out[k] = _binomial(key, position, count, p)
    return out


# --- the split, by row blocks ---------------------------------------------------------------


def _block_keys(first_row: int, n_rows: int, seed: int) -> np.ndarray:
    """The uint64 key of every RNG block that rows ``first_row ..`` touch."""
    return np.array(
        [
            np.random.SeedSequence([seed, STREAM, block]).generate_state(1, np.uint64)[0]
            for block, _, _ in rng_block_spans(first_row, n_rows)
        ],
        dtype=np.uint64,
    )


def split_block(
    block: sp.spmatrix | np.ndarray,
    first_row: int,
    seed: int,
    part: str,
    overdispersion: np.ndarray | None = None,
) -> sp.csr_matrix:
    """The ``part`` ("train" or "test") half of a row block of counts whose first row is
    ``first_row``; the two halves of the same rows add up to the block exactly. Each gene's
    negative binomial size in ``overdispersion`` gives it the Dirichlet-multinomial split;
    ``None`` (or an infinite size) the Poisson split."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    block = sp.csr_matrix(block, dtype=np.float32)
    if not block.has_canonical_format:  # one draw per (cell, gene), on a copy of the input
        block = block.copy()
        block.sum_duplicates()
    keys = _block_keys(first_row, block.shape[0], seed)
    if overdispersion is None:
        overdispersion = np.full(block.shape[1], np.inf)
    train = binomial_half(
        block.indptr,
        block.indices,
        block.data,
        first_row,
        keys,
        RNG_BLOCK_ROWS,
        block.shape[1],
        overdispersion,
    )
    values = train if part == "train" else block.data - train
    half = sp.csr_matrix((values, block.indices.copy(), block.indptr.copy()), shape=block.shape)
    half.eliminate_zeros()
    return half


def counts_half(
    counts: da.Array, seed: int, part: str, overdispersion: np.ndarray | None = None
) -> da.Array:
    """Lazy train or test half of row-chunked ``counts`` (float32 CSR blocks), drawn on the
    workers block by block (see :func:`split_block`)."""
    return map_row_blocks(
        counts,
        split_block,
        counts.shape[1],
        seed,
        part,
        overdispersion,
        dtype=np.float32,
        meta=_COUNTS_META,
    )


def _log_normalized_half(
    block: sp.spmatrix | np.ndarray,
    first_row: int,
    seed: int,
    part: str,
    overdispersion: np.ndarray | None,
    target_sum: float,
    genes: np.ndarray | None,
) -> sp.csr_matrix:
    half = split_block(block, first_row, seed, part, overdispersion)
    return log_normalize(half, target_sum, genes)


def log_normalized_half(
    counts: da.Array,
    seed: int,
    part: str,
    overdispersion: np.ndarray | None = None,
    target_sum: float = 1e4,
    genes: np.ndarray | None = None,
) -> da.Array:
    """Lazy LogNormalize of one half: library sizes over all genes of that half (as Seurat's
    ``NormalizeData`` on the half's own object), then only the columns ``genes`` if given."""
    width = counts.shape[1] if genes is None else genes.size
    return map_row_blocks(
        counts, _log_normalized_half, width, seed, part, overdispersion, target_sum, genes
    )


def _markers(
    groups: ClusterGroups | StratifiedGroups, pairs: np.ndarray, n_genes: int, alpha: float
) -> np.ndarray:
    """Pairs x genes of this feature block: 1 where the gene passes Seurat's filters and has
    ``min(1, p * n_genes) < alpha`` for the pair."""
    sizes = groups.sizes.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.round(groups.nonzero_counts() / sizes, 3)
        mean_log2 = np.log2((groups.sums(np.expm1) + 1.0) / sizes)
    a, b = pairs.T
    tested = (np.maximum(pct[:, a], pct[:, b]) >= MIN_PCT) & (
        np.abs(mean_log2[:, a] - mean_log2[:, b]) >= LOGFC_THRESHOLD
    )
    significant = np.minimum(1.0, np.exp(groups.log_pvalues(pairs)) * n_genes) < alpha
    return (tested.T & significant).astype(np.int64)


def marker_gene_counts(
    data: da.Array, labels: np.ndarray, alpha: float = 0.05, strata: np.ndarray | None = None
) -> np.ndarray:
    """Clusters x clusters matrix of the marker genes ``FindMarkers`` reports significant for
    each pair (``p_val_adj < alpha``), -1 on the diagonal.

    ``data`` is the log-normalized test half of all genes, chunked by rows and feature blocks;
    the Bonferroni factor is its number of columns. Clusters of fewer than 3 cells are tested
    too, where ``FindMarkers`` stops with an error (``min.cells.group = 3``). With ``strata``
    (a group of like depth per cell), the rank-sum test is van Elteren's, within the strata
    (:class:`~recall_dask.stats.ranksums.StratifiedGroups`); the filters are as Seurat's.
    """
    n_clusters = int(labels.max()) + 1
    if n_clusters == 1:
        return pair_matrix(np.empty(0, dtype=np.int64), 1)
    n_pairs = n_clusters * (n_clusters - 1) // 2
    markers = per_feature_block(
        data,
        labels,
        n_clusters,
        _markers,
        data.shape[1],
        alpha,
        lead=(n_pairs,),
        dtype=np.int64,
        strata=strata,
    )
    (per_pair,) = compute(markers.sum(axis=1))
    return pair_matrix(per_pair, n_clusters)


def countsplit_inputs(
    counts: da.Array,
    var: pd.DataFrame,
    params: RecallParams,
    timings: dict[str, float],
    work: Path | str | None,
    storage_options: StorageOptions,
    checkpoints: NoCheckpoints = NO_CHECKPOINTS,
    batches: Batches | None = None,
) -> list[Prepared]:
    """``FindClustersCountsplit``, per split: embed the train half's variable genes, test pairs
    for marker genes on the test half of all genes (:func:`marker_gene_counts`).

    The variable genes are vst's top ``n_hvg`` of the train half; ``var['highly_variable']`` is
    not used, since genes chosen on all counts would let the test half shape the clusters.
    With ``split`` "nb" every gene's overdispersion is fitted first, once, for the
    Dirichlet-multinomial split; with ``depth`` "cell" the pair tests are stratified by depth.
    With ``batches`` the variable genes are those of the train half variable in the most
    batches, and the pair tests are stratified by batch too (by batch and depth group), as
    there are no artificial genes to carry a batch's differences. Stages that ``checkpoints``
    lists as finished are reused.
    """
    depth = checkpoints.arrays("depth", lambda: _cell_depth(counts, params, timings))
    overdispersion = depth.get("overdispersion")
    strata = _strata(depth["library_sizes"] if params.depth == "cell" else None, batches)
    codes = None if batches is None else batches.codes
    prepared = []
    for draw, seed in enumerate(draw_seeds(params.seed, params.draws)):

        def variable_genes(seed: int = seed) -> dict[str, np.ndarray]:
            with stage("variable genes", timings):
                train = counts_half(counts, seed, "train", overdispersion)
                if batches is None:
                    moments = compute(column_moments(train))[0]
                    return {"genes": top_vst_genes(train, var.index, params.n_hvg, moments)}
                (by_batch,) = compute(batch_moments(train, codes, batches.n_batches))
                scores = batch_vst_scores(train, by_batch, codes)
                return {"genes": top_genes_across_batches(scores, var.index, params.n_hvg)}

        genes = checkpoints.arrays(f"genes-{draw}", variable_genes)["genes"]
        with stage("count splitting and normalization", timings):
            train_genes = log_normalized_half(
                counts, seed, "train", overdispersion, params.target_sum, genes
            )
            name = work_name("train", draw, params.draws)
            rows, _ = kept(train_genes, work, name, storage_options, checkpoints)
            test = log_normalized_half(counts, seed, "test", overdispersion, params.target_sum)
            name = work_name("test", draw, params.draws)
            _, test_tiles = kept(test, work, name, storage_options, checkpoints)
        pair_test = partial(_marker_test, test_tiles, alpha=params.fdr, strata=strata)
        prepared.append(Prepared(genes, rows, pair_test))
    return prepared


def _strata(library_sizes: np.ndarray | None, batches: Batches | None) -> np.ndarray | None:
    """The groups a pair's cells are compared within: of like depth (with depth, whose
    library sizes are given), within each batch (with batches), or both."""
    if batches is None:
        return None if library_sizes is None else depth_strata(library_sizes)
    if library_sizes is None:
        return batches.codes
    return batches.codes * DEPTH_STRATA + depth_strata(library_sizes)


def _cell_depth(counts: da.Array, params: RecallParams, timings: dict[str, float]) -> dict:
    """What the split and the tests need of the counts as a whole: each cell's library size
    (for depth strata and the fit), and with the negative binomial split each gene's
    overdispersion, fitted with the cells' depths as offsets
    (:func:`~recall_dask.nulls.fit_null`, ``nb``). Nothing for R's procedure."""
    if params.split == "poisson" and params.depth == "none":
        return {}
    with stage("depth and overdispersion", timings):
        (totals,) = compute(library_sizes(counts))
        if params.split == "poisson":
            return {"library_sizes": totals}
        fit = fit_null(counts, "nb", size_factors=size_factors(totals)).marginal
        return {
            "library_sizes": totals,
            "overdispersion": overdispersion_trend(fit.rate, fit.theta),
        }


#: Groups of genes by mean in which the trend of the NB size is taken.
_TREND_GROUPS = 20
#: A size above this is Poisson: a gene of mean 1 then has less than 1e-6 of extra variance.
_POISSON_SIZE = 1e6


def overdispersion_trend(mean: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Each gene's NB size taken from the trend of size against mean over all genes, as
    sctransform and glmGamPoi regularize it: the median log size of the genes in its group of
    like mean (20 quantile groups of log mean), interpolated at its own log mean; infinite
    (Poisson) where the trend is, and for genes never seen.

    A gene's own size, fitted to a few hundred counts, is too noisy to split by: sizes far
    below the truth make the Dirichlet-multinomial split send whole counts to one half, and
    far above it leave the halves sharing the gene's noise, and either makes them dependent.
    """
    seen = mean > 0
    log_mean = np.log(mean[seen])
    log_size = np.log(np.minimum(size[seen], _POISSON_SIZE))
    groups = np.quantile(log_mean, np.linspace(0, 1, _TREND_GROUPS + 1)[1:-1])
    group = np.searchsorted(groups, log_mean, side="right")
    present = np.unique(group)
    centres = np.array([np.median(log_mean[group == g]) for g in present])
    trend = np.array([np.median(log_size[group == g]) for g in present])
    fitted = np.interp(log_mean, centres, trend)
    regularized = np.full(mean.size, np.inf)
    poisson = fitted >= np.log(_POISSON_SIZE) - 1e-9  # the cap, up to rounding
    regularized[seen] = np.where(poisson, np.inf, np.exp(fitted))
    return regularized


def _marker_test(
    test_tiles: da.Array, labels: np.ndarray, alpha: float, strata: np.ndarray | None
) -> tuple[np.ndarray, None]:
    """The pair test of a clustering: marker-gene counts per pair, and no marker candidates."""
    return marker_gene_counts(test_tiles, labels, alpha=alpha, strata=strata), None
