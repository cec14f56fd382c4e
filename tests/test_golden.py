"""Golden tests from Seurat 4.3.0: given R's inputs, our stages give R's answers.

The fixtures in ``tests/golden/`` were written by ``tests/golden/make_golden.py`` (R's script
``seurat_golden.R``) on the bundled PBMC 3k, so these tests need no R. Each stage is fed R's
own input for it: R's embedding for the neighbors, R's neighbors for the SNN graph, R's graph
for Louvain, R's artificial genes (seed 1) for the PCA and the pair tests.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from oracles import pairwise_log_pvalues

from recall_dask import io
from recall_dask.calibrate import calibrate
from recall_dask.draw import embedding
from recall_dask.graph import annoy_neighbors, cluster_graph, shared_nearest_neighbors
from recall_dask.methods.recall import selected_gene_counts
from recall_dask.params import RecallParams
from recall_dask.preprocess import column_moments, log_normalize
from recall_dask.preprocess.hvg import vst_standardized_variance
from recall_dask.stats.knockoff import knockoff_statistics, n_selected
from recall_dask.stats.ranksums import cluster_pairs

GOLDEN = Path(__file__).resolve().parent / "golden"


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"{name}.npz") as fixture:
        return dict(fixture)


@lru_cache(maxsize=1)
def pbmc3k_counts() -> sp.csr_matrix:
    """The bundled counts (cells x genes), canonical as every stage sees them."""
    return io.canonical_counts(scipy.io.mmread(io.BUNDLED_PBMC3K / "matrix.mtx.gz").T)


def snn_graph(fixture: dict[str, np.ndarray], n: int) -> sp.csr_matrix:
    """R's SNN graph from its upper-triangle triplets (the diagonal does not matter here)."""
    upper = sp.coo_matrix((fixture["snn"], (fixture["snn_row"], fixture["snn_col"])), (n, n))
    return (upper + upper.T).tocsr()


# -- variable genes ----------------------------------------------------------------------


def test_vst_selects_and_ranks_seurats_variable_genes():
    """The same 2,000 genes, in Seurat's order up to genes whose scores tie exactly here (our
    sums are exact integers; R's rounding orders such genes one way or the other)."""
    want = golden("pbmc3k_plain")["variable_genes"]
    counts = da.from_array(pbmc3k_counts(), chunks=(2048, -1), asarray=False)
    score = vst_standardized_variance(counts, column_moments(counts).compute())
    ours = np.argsort(-score, kind="stable")[: want.size]
    assert set(ours) == set(want)
    np.testing.assert_array_equal(score[ours], score[want])


# -- neighbors, SNN graph, Louvain ------------------------------------------------------


def test_annoy_gives_seurats_neighbors():
    plain = golden("pbmc3k_plain")
    np.testing.assert_array_equal(annoy_neighbors(plain["embedding"], 20), plain["neighbors"])


def test_snn_from_seurats_neighbors_has_seurats_weights():
    plain = golden("pbmc3k_plain")
    ours = sp.triu(shared_nearest_neighbors(plain["neighbors"]), k=1).tocoo()
    order = np.lexsort((ours.col, ours.row))
    want = np.lexsort((plain["snn_col"], plain["snn_row"]))
    np.testing.assert_array_equal(ours.row[order], plain["snn_row"][want])
    np.testing.assert_array_equal(ours.col[order], plain["snn_col"][want])
    np.testing.assert_array_equal(ours.data[order], plain["snn"][want])


@pytest.mark.parametrize("name", ["pbmc3k_plain", "lattice"])
def test_louvain_gives_seurats_clusters(name):
    """Seurat's FindClusters (Louvain, 10 starts, random.seed 0) on PBMC 3k's SNN graph and on
    a lattice graph whose weights tie everywhere: the same clusters, numbered the same."""
    fixture = golden(name)
    snn = snn_graph(fixture, fixture["clusters"].shape[0])
    for resolution, want in zip(fixture["resolutions"], fixture["clusters"].T, strict=True):
        np.testing.assert_array_equal(cluster_graph(snn, float(resolution)), want)


# -- the augmented matrix of R's draws: PCA and pair tests --------------------------------


@lru_cache(maxsize=1)
def seurat_augmented() -> da.Array:
    """[variable genes | R's artificial genes] of PBMC 3k, log-normalized: the matrix
    FindClustersRecall builds, genes in Seurat's rank order and each twin beside its gene's
    position."""
    draws = golden("pbmc3k_augmented_seed1")
    genes = golden("pbmc3k_plain")["variable_genes"]
    artificial = sp.csr_matrix(
        (draws["draws_data"], draws["draws_indices"], draws["draws_indptr"]),
        shape=(pbmc3k_counts().shape[0], genes.size),
    )
    real = pbmc3k_counts()[:, genes]
    augmented = sp.hstack([real, artificial], format="csr", dtype=np.float64)
    return da.from_array(log_normalize(augmented, 1e4), chunks=(1024, -1), asarray=False)


def test_pca_gives_seurats_embedding():
    want = golden("pbmc3k_augmented_seed1")
    ours = embedding(seurat_augmented(), RecallParams()).compute()
    sdev = np.sqrt((ours**2).sum(axis=0) / (ours.shape[0] - 1))
    np.testing.assert_allclose(sdev, want["sdev"], rtol=1e-6)
    for pc in range(want["embedding"].shape[1]):
        sign = np.sign(ours[:, pc] @ want["embedding"][:, pc])
        np.testing.assert_allclose(sign * ours[:, pc], want["embedding"][:, pc], atol=1e-6)


def test_pair_tests_give_seurats_pvalues_w_and_selections():
    """FindMarkers(logfc.threshold = 0, min.pct = 0) through limma's rank-sum test, for a pair
    that selects nothing and two that select genes."""
    want = golden("pbmc3k_augmented_seed1")
    labels = want["clusters"].astype(np.int64)
    n_clusters = int(labels.max()) + 1
    log_p = pairwise_log_pvalues(seurat_augmented(), labels, n_clusters)
    rows = {tuple(pair): i for i, pair in enumerate(cluster_pairs(n_clusters).tolist())}
    n_genes = want["W"].shape[1]
    for k, (a, b) in enumerate(want["pairs"].tolist()):
        ours = log_p[rows[min(a, b), max(a, b)]]
        for theirs, part in (
            (want["p_gene"][k], ours[:n_genes]),
            (want["p_artificial"][k], ours[n_genes:]),
        ):
            representable = theirs > 1e-300
            np.testing.assert_allclose(
                part[representable], np.log(theirs[representable]), rtol=1e-6
            )
        w = knockoff_statistics(ours[:n_genes], ours[n_genes:])
        finite = np.isfinite(want["W"][k])
        np.testing.assert_allclose(w[finite], want["W"][k][finite], rtol=1e-6, atol=1e-9)
        assert n_selected(w) == want["selected"][k]


def test_recall_on_seurats_draws_ends_at_seurats_clusters():
    """Fed R's artificial genes of seed 1, our stages repeat R's whole run: the same
    embedding, Annoy neighbors, clusterings and pair decisions, so the same final clusters."""
    params = RecallParams()
    data = seurat_augmented()
    pcs = embedding(data, params).compute()
    snn = shared_nearest_neighbors(annoy_neighbors(pcs[:, : params.dims], params.k_neighbors))
    n_genes = data.shape[1] // 2
    tiles = data.rechunk({1: 1024})
    iterations = calibrate(
        snn, lambda labels: selected_gene_counts(tiles, labels, n_genes, params.fdr), params
    )
    reference = pd.read_csv(io.BUNDLED_PBMC3K / "r_recall_by_seed.csv")
    np.testing.assert_array_equal(iterations[-1].labels, reference["recall_seed1"])
