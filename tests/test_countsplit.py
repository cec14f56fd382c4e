"""Count splitting: the split's exactness and law, its independence of chunking and workers,
the FindMarkers pair test against a slow oracle, and the method end to end and on the CLI."""

from __future__ import annotations

import anndata as ad
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import as_row_chunked, simulate_dense
from scipy.stats import mannwhitneyu
from sklearn.metrics import adjusted_rand_score

from recall_dask.api import recall
from recall_dask.cli import main
from recall_dask.dask_cluster import ClusterConfig, dask_client
from recall_dask.methods.countsplit import (
    LOGFC_THRESHOLD,
    MIN_PCT,
    RNG_BLOCK_ROWS,
    counts_half,
    marker_gene_counts,
    overdispersion_trend,
    split_block,
)
from recall_dask.simulate import write_simulated
from recall_dask.stats.ranksums import cluster_pairs

FAST = {"n_hvg": 500}


@pytest.fixture(scope="module")
def counts() -> sp.csr_matrix:
    """2,500 cells (three RNG blocks) x 40 genes, mostly small counts, some above 64."""
    rng = np.random.default_rng(7)
    dense = rng.poisson(rng.lognormal(0.0, 1.5, size=40), size=(2500, 40))
    dense[::97, 3] = rng.integers(64, 3000, size=dense[::97].shape[0])
    return sp.csr_matrix(dense.astype(np.float32))


#: Each gene's NB size for the Dirichlet-multinomial split of ``counts``: some overdispersed
#: (tiny sizes too), some Poisson.
SIZES = np.tile([0.05, 0.7, 3.0, np.inf, 40.0], 8)
SPLITS = {"poisson": None, "nb": SIZES}


def halves(matrix, chunks, seed=5, overdispersion=None) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    lazy = as_row_chunked(matrix, chunks)
    train, test = (counts_half(lazy, seed, part, overdispersion) for part in ("train", "test"))
    return tuple(sp.csr_matrix(x) for x in da.compute(train, test))


@pytest.mark.parametrize("overdispersion", SPLITS.values(), ids=SPLITS.keys())
def test_halves_add_up_to_the_counts(counts, overdispersion):
    train, test = halves(counts, 37, overdispersion=overdispersion)
    assert (train + test != counts).nnz == 0
    for half in (train, test):
        assert half.data.min() > 0, "no negative and no stored zero counts"
        np.testing.assert_array_equal(half.data, np.round(half.data))
    assert 0.45 < train.sum() / counts.sum() < 0.55


@pytest.mark.parametrize("n", [1, 2, 5, 63, 64, 65, 200, 1000])
def test_train_is_binomial_half(n):
    """Mean n/2 and variance n/4 within 5 standard errors, entries uncorrelated."""
    m_rows, m_cols = 3000, 4
    train = split_block(sp.csr_matrix(np.full((m_rows, m_cols), n, np.float32)), 0, 3, "train")
    draws = train.toarray().astype(np.float64)
    m = draws.size
    variance = n / 4
    assert abs(draws.mean() - n / 2) < 5 * np.sqrt(variance / m)
    # (1/m) sum (x - n/2)^2 has sd sqrt((mu4 - sigma^4) / m), mu4 = 3 sigma^4 - sigma^2 / 2 here;
    # the sample variance is that minus (mean - n/2)^2, at most 25 sigma^2 / m at 5 sd.
    spread = 5 * np.sqrt((2 * variance**2 - variance / 2) / m) + 25 * variance / m
    assert abs(draws.var() - variance) < spread
    for a, b in ((0, 1), (2, 3)):
        assert abs(np.corrcoef(draws[:, a], draws[:, b])[0, 1]) < 5 / np.sqrt(m_rows)
    other_seed = split_block(sp.csr_matrix(np.full((m_rows, m_cols), n, np.float32)), 0, 4, "train")
    assert (other_seed != train).nnz > 0


@pytest.mark.parametrize("overdispersion", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize("chunks", [37, (1000, 100, 1400), 1024], ids=str)
def test_split_does_not_depend_on_chunking(counts, chunks, overdispersion):
    one_train, one_test = halves(counts, -1, overdispersion=overdispersion)
    train, test = halves(counts, chunks, overdispersion=overdispersion)
    assert (train != one_train).nnz == 0 and (test != one_test).nnz == 0


def test_nb_split_of_a_poisson_gene_is_the_poisson_split(counts):
    poisson = halves(counts, 37)
    nb = halves(counts, 37, overdispersion=SIZES)
    genes = np.isinf(SIZES)
    for got, want in zip(nb, poisson, strict=True):
        assert (got[:, genes] != want[:, genes]).nnz == 0
        assert (got[:, ~genes] != want[:, ~genes]).nnz > 0


@pytest.mark.parametrize(("mean", "size"), [(0.8, 0.5), (5.0, 2.0), (40.0, 8.0), (300.0, 1.0)])
def test_nb_split_gives_independent_nb_halves(mean, size):
    """Negative binomial counts (mean mu, size theta) split by the Dirichlet-multinomial give
    halves of mean mu / 2 and size theta / 2 that are uncorrelated (Neufeld et al. 2024); the
    Poisson split's halves share the overdispersion."""
    rng = np.random.default_rng(int(mean * size))
    n = 40_000
    column = rng.poisson(rng.gamma(size, mean / size, n)).astype(np.float32)
    counts = sp.csr_matrix(column[:, None])
    train = split_block(counts, 0, 9, "train", np.array([size])).toarray().ravel()
    test = column - train
    half_mean, half_size = mean / 2, size / 2
    variance = half_mean + half_mean**2 / half_size
    assert abs(train.mean() - half_mean) < 5 * np.sqrt(variance / n)
    assert train.var() == pytest.approx(variance, rel=0.1)
    assert abs(np.corrcoef(train, test)[0, 1]) < 5 / np.sqrt(n)
    poisson = split_block(counts, 0, 9, "train").toarray().ravel()
    assert np.corrcoef(poisson, column - poisson)[0, 1] > 0.1


def test_split_same_on_one_and_two_workers(counts):
    expected = halves(counts, -1)
    for n_workers in (1, 2):
        with dask_client(ClusterConfig(n_workers=n_workers, threads_per_worker=1)):
            got = halves(counts, 311)
        for half, reference in zip(got, expected, strict=True):
            assert (half != reference).nnz == 0
    assert counts.shape[0] > 2 * RNG_BLOCK_ROWS


# -- the pair test --------------------------------------------------------------------------


def designed_markers() -> tuple[np.ndarray, np.ndarray]:
    """Log-normalized-like values for three clusters (1,000, 1,100 and 900 cells), with ties and
    zeros, where each of FindMarkers' filters decides some significant gene."""
    rng = np.random.default_rng(11)
    sizes = (1000, 1100, 900)
    labels = np.repeat(np.arange(3), sizes)
    rng.shuffle(labels)
    levels = np.log1p([0.0, 1.0, 2.0, 11.0])
    genes = []
    # Strong marker of cluster 0, tie-heavy levels.
    genes.append(levels[np.where(labels == 0, rng.integers(1, 4, labels.size), 0)])
    # Nonzero in 9 and 10 cells of cluster 0 only: pct 0.009 (filtered) and 0.010 (kept).
    for detected in (9, 10):
        gene = np.zeros(labels.size)
        gene[np.flatnonzero(labels == 0)[:detected]] = levels[3]
        genes.append(gene)
    # Same mean of expm1 in every cluster, but cluster 0 constant at 2 while the others are
    # mostly 1 and sometimes 11: rank sums differ hugely, |avg_log2FC| < 0.1.
    gene = np.full(labels.size, levels[2])
    for cluster in (1, 2):
        members = rng.permutation(np.flatnonzero(labels == cluster))
        gene[members] = levels[1]
        gene[members[: members.size // 10]] = levels[3]
    genes.append(gene)
    # Noise with the same law everywhere, an all-zero gene, and a constant gene.
    genes.append(levels[rng.integers(0, 4, labels.size)] * (rng.random(labels.size) < 0.5))
    genes.append(np.zeros(labels.size))
    genes.append(np.full(labels.size, levels[1]))
    # A weak difference between clusters 1 and 2 only.
    shift = np.where(labels == 2, 0.6, 0.45)
    genes.append(levels[1] * (rng.random(labels.size) < shift))
    return np.column_stack(genes), labels


def oracle(dense: np.ndarray, labels: np.ndarray, alpha: float) -> tuple[np.ndarray, dict]:
    """Seurat v5 FindMarkers per pair, gene by gene with scipy; also which filter decided."""
    n_clusters, n_genes = labels.max() + 1, dense.shape[1]
    selected = np.full((n_clusters, n_clusters), -1)
    decided = {"pct": 0, "logfc": 0}
    for a, b in cluster_pairs(n_clusters):
        x1, x2 = dense[labels == b], dense[labels == a]  # R: ident.1 is the later cluster
        pct1 = np.round((x1 > 0).mean(axis=0), 3)
        pct2 = np.round((x2 > 0).mean(axis=0), 3)
        fc = np.log2((np.expm1(x1).sum(axis=0) + 1) / len(x1)) - np.log2(
            (np.expm1(x2).sum(axis=0) + 1) / len(x2)
        )
        p = np.array(
            [
                mannwhitneyu(x1[:, j], x2[:, j], method="asymptotic", use_continuity=True).pvalue
                for j in range(n_genes)
            ]
        )
        significant = np.minimum(1, np.nan_to_num(p, nan=1.0) * n_genes) < alpha
        pct_ok = np.maximum(pct1, pct2) >= MIN_PCT
        fc_ok = np.abs(fc) >= LOGFC_THRESHOLD
        decided["pct"] += int(np.sum(significant & fc_ok & ~pct_ok))
        decided["logfc"] += int(np.sum(significant & pct_ok & ~fc_ok))
        selected[a, b] = selected[b, a] = np.sum(significant & pct_ok & fc_ok)
    return selected, decided


@pytest.mark.parametrize("chunks", [(3000, 8), (37, 3)], ids=["one-task", "37-rows-3-genes"])
def test_pair_test_matches_the_oracle(chunks):
    dense, labels = designed_markers()
    expected, decided = oracle(dense, labels, 0.05)
    assert decided["pct"] > 0 and decided["logfc"] > 0, "each filter must decide a gene"
    assert (expected[~np.eye(3, dtype=bool)] > 0).all() and expected.max() < dense.shape[1]
    data = da.from_array(sp.csr_matrix(dense), chunks=chunks, asarray=False)
    np.testing.assert_array_equal(marker_gene_counts(data, labels), expected)
    strict, _ = oracle(dense, labels, 1e-12)
    np.testing.assert_array_equal(marker_gene_counts(data, labels, alpha=1e-12), strict)


def test_one_cluster_needs_no_test():
    data = da.from_array(sp.csr_matrix(np.ones((5, 2))), chunks=(2, 2), asarray=False)
    np.testing.assert_array_equal(marker_gene_counts(data, np.zeros(5, dtype=int)), [[-1]])


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_groups():
    adata = simulate_dense(1500, 1500, 5, de_prob=0.1, seed=1)
    with pytest.warns(UserWarning, match="under-clustered"):
        recall(adata, method="countsplit", seed=1, **FAST)
    return adata


def test_five_groups_recovered(five_groups):
    labels = five_groups.obs["recall"]
    assert labels.nunique() == 5
    assert adjusted_rand_score(five_groups.obs["group"], labels) >= 0.95
    record = five_groups.uns["recall"]
    assert record["method"] == "countsplit" and record["params"]["method"] == "countsplit"
    selected = record["iterations"]["0"]["n_selected"]
    assert (np.diag(selected) == -1).all() and (selected[~np.eye(5, dtype=bool)] > 0).all()
    assert record["variable_genes"].size == FAST["n_hvg"]


def test_work_store_and_chunks_change_nothing(five_groups, tmp_path):
    adata = simulate_dense(1500, 1500, 5, de_prob=0.1, seed=1)
    with pytest.warns(UserWarning, match="under-clustered"):
        recall(adata, method="countsplit", seed=1, chunk_size=37, work_dir=tmp_path, **FAST)
    np.testing.assert_allclose(
        adata.obsm["X_recall_pca"], five_groups.obsm["X_recall_pca"], atol=1e-8
    )
    np.testing.assert_array_equal(adata.obs["recall"], five_groups.obs["recall"])
    np.testing.assert_array_equal(
        adata.uns["recall"]["iterations"]["0"]["n_selected"],
        five_groups.uns["recall"]["iterations"]["0"]["n_selected"],
    )
    assert list(tmp_path.iterdir()) == [], "the work store is removed after the run"


def test_command_line_runs_countsplit(tmp_path):
    source, out = tmp_path / "sim.zarr", tmp_path / "out.zarr"
    write_simulated(source, 600, 400, 3, de_prob=0.2, seed=2, log_mean=-1.0)
    options = ["--method", "countsplit", "--n-hvg", "200", "--n-workers", "1", "--quiet"]
    assert main(["run", str(source), "-o", str(out), *options]) == 0
    result = ad.read_zarr(out)
    assert result.uns["recall"]["method"] == "countsplit"
    assert result.uns["recall"]["params"]["method"] == "countsplit"
    truth = ad.read_zarr(source).obs["group"]
    assert adjusted_rand_score(truth, result.obs["recall"]) >= 0.95


def test_overdispersion_is_the_trend_of_size_against_mean():
    """Per-gene sizes fitted to NB counts of size 5 scatter widely; the trend recovers the
    common size, follows a size that changes with the mean, and leaves Poisson genes and
    unseen genes Poisson."""
    rng = np.random.default_rng(3)
    n = 4000  # 200 genes per group: each group's median log size is within 0.4 of the truth
    mean = np.concatenate([np.exp(rng.uniform(-3, 2, n)), np.zeros(3)])
    scatter = np.exp(rng.normal(0, 1.0, mean.size))
    trend = overdispersion_trend(mean, 5.0 * scatter)
    np.testing.assert_allclose(trend[:n], 5.0, rtol=0.5)
    assert np.median(trend[:n]) == pytest.approx(5.0, rel=0.1)
    assert np.isinf(trend[n:]).all()
    rising = overdispersion_trend(mean, mean * scatter)  # size proportional to the mean
    inside = (mean > np.exp(-2)) & (mean < np.exp(1))
    np.testing.assert_allclose(rising[inside], mean[inside], rtol=0.5)
    poisson = overdispersion_trend(mean, np.full(mean.size, np.inf))
    assert np.isinf(poisson).all()
