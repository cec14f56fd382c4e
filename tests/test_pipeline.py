"""End to end on simulated data with known groups, and the AnnData interface."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import simulate_dense
from sklearn.metrics import adjusted_rand_score

from recall_dask.api import recall
from recall_dask.dask_cluster import ClusterConfig, dask_client
from recall_dask.errors import InputError

FAST = {"n_hvg": 500}
#: Five simulated groups with similar library sizes (within 1.2x). Where one group's library
#: size is 1.4x or more another's (seeds 4 and 7 of this simulator), the artificial genes,
#: whose counts do not scale with library size, differ between those two clusters after
#: normalization and the pair can select nothing at any resolution; see "Limits" in
#: docs/explanation/differences.md.
FIVE_GROUPS = {"de_prob": 0.1, "seed": 1}


@pytest.fixture(scope="module")
def five_groups():
    adata = simulate_dense(1500, 1500, 5, **FIVE_GROUPS)
    return recall(adata, seed=1, **FAST)


def test_homogeneous_population_is_one_cluster():
    adata = simulate_dense(2000, 1500, 1, seed=11)
    recall(adata, seed=1, **FAST)
    assert adata.obs["recall_initial"].nunique() >= 2, "plain clustering at 0.8 over-clusters"
    assert adata.obs["recall"].nunique() == 1
    assert adata.uns["recall"]["n_clusters"] == 1


def test_five_groups_recovered(five_groups):
    labels = five_groups.obs["recall"]
    assert labels.nunique() == 5
    assert adjusted_rand_score(five_groups.obs["group"], labels) >= 0.95


def test_results_land_where_scanpy_users_look(five_groups):
    adata = five_groups
    assert isinstance(adata.obs["recall"].dtype, pd.CategoricalDtype)
    assert isinstance(adata.obs["recall_initial"].dtype, pd.CategoricalDtype)
    assert adata.obsm["X_recall_pca"].shape == (adata.n_obs, 50)
    record = adata.uns["recall"]
    assert record["params"]["n_hvg"] == 500 and record["seed"] == 1
    assert set(record["versions"]) >= {"dask", "anndata", "zarr", "recall-dask"}
    iterations = [record["iterations"][str(i)] for i in range(record["n_iterations"])]
    assert iterations[-1]["n_clusters"] == record["n_clusters"]
    assert iterations[-1]["failing_pair"] == []
    selected = iterations[-1]["n_selected"]
    assert selected.shape == (5, 5)
    assert (np.diag(selected) == -1).all() and (selected[~np.eye(5, dtype=bool)] > 0).all()
    for earlier in iterations[:-1]:
        a, b = earlier["failing_pair"]
        assert earlier["n_selected"][a, b] == 0
    resolutions = [it["resolution"] for it in iterations]
    np.testing.assert_allclose(resolutions, 0.8 * 0.8 ** np.arange(len(iterations)))


def test_scanpy_workflow_around_recall():
    """An AnnData as scanpy leaves it (log-normalized X, counts in a layer) goes in; scanpy's
    neighbors, UMAP and plots work on what comes out."""
    import scanpy as sc

    adata = simulate_dense(600, 800, 3, de_prob=0.1, seed=2)
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    recall(adata, layer="counts", seed=1, n_hvg=300, progress=False)
    sc.pp.neighbors(adata, use_rep="X_recall_pca", n_pcs=10)
    sc.tl.umap(adata, random_state=0)
    ax = sc.pl.umap(adata, color="recall", show=False)
    shown = [text.get_text() for text in ax.get_legend().get_texts()]
    assert shown == list(adata.obs["recall"].cat.categories)
    assert len(shown) == adata.uns["recall"]["n_clusters"] == 3
    markers = pd.DataFrame(adata.uns["recall"]["markers"])
    assert set(markers["gene"]) <= set(adata.var_names)


def test_key_added_keeps_the_users_pca_and_earlier_runs():
    """Results go under key_added, as scanpy's tools put them: obsm['X_pca'] stays the user's,
    and a second run under another key leaves the first in place."""
    adata = simulate_dense(600, 800, 3, de_prob=0.1, seed=2)
    users_pca = np.random.default_rng(0).normal(size=(adata.n_obs, 5))
    adata.obsm["X_pca"] = users_pca.copy()
    recall(adata, seed=1, n_hvg=300, progress=False)
    first = adata.obs["recall"].copy(), adata.obsm["X_recall_pca"].copy()
    recall(adata, key_added="seed2", seed=2, n_hvg=300, progress=False)
    np.testing.assert_array_equal(adata.obsm["X_pca"], users_pca)
    np.testing.assert_array_equal(adata.obs["recall"], first[0])
    np.testing.assert_array_equal(adata.obsm["X_recall_pca"], first[1])
    assert {"recall", "recall_initial", "seed2", "seed2_initial"} <= set(adata.obs.columns)
    assert adata.obsm["X_seed2_pca"].shape == (adata.n_obs, 50)
    assert adata.uns["recall"]["seed"] == 1 and adata.uns["seed2"]["seed"] == 2
    with pytest.raises(InputError, match="key_added"):
        recall(adata, key_added="a/b", progress=False)


def test_counts_from_a_layer_give_the_same_labels(five_groups):
    adata = simulate_dense(1500, 1500, 5, **FIVE_GROUPS)
    adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X * 0.5  # not counts: must be ignored
    recall(adata, layer="counts", seed=1, **FAST)
    np.testing.assert_array_equal(adata.obs["recall"], five_groups.obs["recall"])


def test_chunk_boundaries_do_not_change_the_result(five_groups):
    adata = simulate_dense(1500, 1500, 5, **FIVE_GROUPS)
    recall(adata, chunk_size=37, seed=1, **FAST)
    np.testing.assert_allclose(
        adata.obsm["X_recall_pca"], five_groups.obsm["X_recall_pca"], atol=1e-8
    )
    np.testing.assert_array_equal(adata.obs["recall"], five_groups.obs["recall"])


def test_out_of_core_work_store_gives_the_in_memory_result(five_groups, tmp_path):
    """The Zarr work store, written and read at 37-cell chunks, changes nothing."""
    adata = simulate_dense(1500, 1500, 5, **FIVE_GROUPS)
    recall(adata, chunk_size=37, work_dir=tmp_path, seed=1, **FAST)
    np.testing.assert_allclose(
        adata.obsm["X_recall_pca"], five_groups.obsm["X_recall_pca"], atol=1e-8
    )
    np.testing.assert_array_equal(adata.obs["recall"], five_groups.obs["recall"])
    iterations = adata.uns["recall"]["iterations"]
    for key, expected in five_groups.uns["recall"]["iterations"].items():
        np.testing.assert_array_equal(iterations[key]["n_selected"], expected["n_selected"])
    assert list(tmp_path.iterdir()) == [], "the work store is removed after the run"


def test_same_seed_same_labels_on_one_and_two_workers():
    labels = []
    for n_workers in (1, 2):
        adata = simulate_dense(600, 800, 3, de_prob=0.15, seed=5)
        with dask_client(ClusterConfig(n_workers=n_workers, threads_per_worker=1)):
            recall(adata, chunk_size=150, seed=3, n_hvg=300)
        labels.append(adata.obs["recall"].to_numpy())
    np.testing.assert_array_equal(*labels)
    assert len(set(labels[0])) == 3


def test_fewer_cells_than_neighbors_is_an_input_error():
    with pytest.raises(InputError, match="fewer cells"):
        recall(simulate_dense(15, 200, 1, seed=1), n_hvg=50)
