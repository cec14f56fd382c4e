"""recall over many draws (``--draws``): one answer, its confidence and its stability."""

from __future__ import annotations

import gc
import warnings
import weakref

import dask
import numpy as np
import pytest
from conftest import poisson_population, simulate_dense
from sklearn.metrics import adjusted_rand_score

from recall_dask import calibrate as calibrate_module
from recall_dask import draw as draw_module
from recall_dask import run as run_module
from recall_dask.api import recall
from recall_dask.calibrate import draws_needed
from recall_dask.choices import NULLS_WITHOUT_OVERDISPERSION
from recall_dask.consensus import calibrated_consensus, consensus
from recall_dask.dask_cluster import ClusterConfig, dask_client
from recall_dask.errors import InputError
from recall_dask.graph import StoredSNNGraph
from recall_dask.io import counts_from_anndata
from recall_dask.methods import recall_inputs
from recall_dask.methods.draws import draw_seeds
from recall_dask.nulls import NULL_METHODS
from recall_dask.params import RecallParams
from recall_dask.tasks import ClientThreads

FAST = {"n_hvg": 300, "progress": False}


def test_one_draw_uses_the_seed_itself_and_many_use_independent_children():
    assert draw_seeds(7, 1) == [7]
    seeds = draw_seeds(7, 10)
    assert len(set(seeds)) == 10 and seeds == draw_seeds(7, 10) and seeds != draw_seeds(8, 10)


@pytest.mark.parametrize("outer_seed", [0, 1, 2])
def test_homogeneous_population_is_one_cluster_for_every_outer_seed(outer_seed):
    adata = poisson_population(800, 600, seed=3)
    recall(adata, draws=10, seed=outer_seed, **FAST)
    record = adata.uns["recall"]
    assert adata.obs["recall"].nunique() == 1
    stability = record["stability"]
    assert stability["n_clusters"].shape == (record["n_iterations"], 10)
    assert stability["n_clusters"][0].min() >= 2, "every draw over-clusters at the start"
    assert stability["passed"][-1].sum() >= 5 and not stability["passed"][:-1].any(axis=1).all()


def test_five_groups_are_five_clusters_with_full_confidence():
    adata = simulate_dense(1000, 1000, 5, de_prob=0.1, seed=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the starting resolution", UserWarning)
        recall(adata, draws=10, seed=4, **FAST)
    labels = adata.obs["recall"]
    assert labels.nunique() == 5
    assert adjusted_rand_score(adata.obs["group"], labels) >= 0.95
    assert adata.obs["recall_confidence"].min() >= 0.9
    stability = adata.uns["recall"]["stability"]
    np.testing.assert_array_less(0.9, stability["cluster_stability"])
    separation = stability["pair_separation"]
    np.testing.assert_allclose(separation[~np.eye(5, dtype=bool)], 1.0)
    # The consensus clusters get their own pair tests (on the medoid draw's matrix).
    selected = adata.uns["recall"]["n_selected"]
    assert selected.shape == (5, 5) and (selected[~np.eye(5, dtype=bool)] > 0).all()
    assert set(adata.uns["recall"]["markers"]["cluster_a"]) == {0, 1, 2, 3}
    # Every pair passes the draws' own tests: at least half of them select a gene for it.
    assert stability["pair_n_selected"].shape == (10, 5, 5)
    assert (stability["pair_support"][~np.eye(5, dtype=bool)] >= 0.5).all()
    assert stability["merges"]["cells_a"].size == 0


def test_consensus_that_splits_a_group_no_draw_tells_apart_is_merged():
    """Two of three draws' answers cut one true group in two at random, so the vote keeps the
    cut; the draws' own knockoff tests (on their artificial genes) find no gene for that pair,
    and the merge step joins it again. Without the merge the answer has a failing pair."""
    adata = simulate_dense(600, 800, 2, de_prob=0.1, seed=4)
    params = RecallParams(n_hvg=300, draws=3, seed=2)
    draws = recall_inputs(counts_from_anndata(adata), adata.var, params, {}, None, None)
    truth = adata.obs["group"].cat.codes.to_numpy()
    cut = np.where((truth == 0) & (np.random.default_rng(0).random(600) < 0.5), 2, truth)
    partitions = [cut, cut.copy(), truth]
    agreed = consensus(partitions)
    assert agreed.labels.max() == 2
    before = np.stack([draw.pair_test(agreed.labels)[0] for draw in draws])
    assert ((before > 0).sum(axis=0) < 2).any(), "the vote's cut fails the draws' tests"
    needed = draws_needed(3, params.agreement)
    calibrated = calibrated_consensus(agreed, partitions, [d.pair_test for d in draws], needed)
    assert adjusted_rand_score(calibrated.consensus.labels, truth) == 1.0
    assert len(calibrated.merges) == 1
    assert (calibrated.pair_support[~np.eye(2, dtype=bool)] >= 2 / 3).all()


def test_one_draw_keeps_rs_record():
    adata = simulate_dense(600, 800, 3, de_prob=0.15, seed=5)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the starting resolution", UserWarning)
        recall(adata, seed=3, **FAST)
    record = adata.uns["recall"]
    assert "stability" not in record and "recall_confidence" not in adata.obs
    last = record["iterations"][str(record["n_iterations"] - 1)]
    np.testing.assert_array_equal(record["n_selected"], last["n_selected"])
    assert {"resolution", "n_clusters", "n_pairs_tested", "failing_pair"} <= set(last)


def _stable_result(adata):
    return (
        adata.obs["recall"].to_numpy(),
        adata.obs["recall_confidence"].to_numpy(),
        adata.uns["recall"]["stability"]["cluster_stability"],
        adata.uns["recall"]["stability"]["n_clusters"],
    )


def test_same_answer_on_one_and_two_workers_any_chunking_and_out_of_core(tmp_path):
    """In worker memory on one worker, and out of core (each draw's matrices, embedding and
    graph in the work store) on two at another chunking: the same labels, confidence and
    stability."""
    results = []
    for n_workers, chunk_size, work_dir in ((1, 150, None), (2, 41, tmp_path)):
        adata = simulate_dense(600, 800, 3, de_prob=0.05, seed=5)
        with dask_client(ClusterConfig(n_workers=n_workers, threads_per_worker=1)):
            recall(adata, chunk_size=chunk_size, seed=3, draws=4, work_dir=work_dir, **FAST)
        results.append(_stable_result(adata))
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, want)
    assert list(tmp_path.iterdir()) == [], "the work store is removed after the run"


def test_out_of_core_draws_keep_their_graphs_in_the_work_store(tmp_path, monkeypatch):
    """With a work directory, the loop gets each draw's graph as a stored one, read back once
    by every clustering, so the client does not hold every draw's graph for the whole loop."""
    reads: list[int] = []
    clusterings: list[float] = []
    real_calibrate, real_cluster = run_module.calibrate_draws, calibrate_module.cluster_graph

    def counted(graph: StoredSNNGraph) -> StoredSNNGraph:
        def read():
            reads.append(graph.n_cells)
            return graph.read()

        return StoredSNNGraph(read, graph.n_cells)

    def spying(graphs, *args, **kwargs):
        assert all(isinstance(graph, StoredSNNGraph) for graph in graphs)
        return real_calibrate([counted(graph) for graph in graphs], *args, **kwargs)

    def clustering(graph, resolution, **kwargs):
        clusterings.append(resolution)
        return real_cluster(graph, resolution, **kwargs)

    monkeypatch.setattr(run_module, "calibrate_draws", spying)
    monkeypatch.setattr(calibrate_module, "cluster_graph", clustering)
    adata = simulate_dense(300, 500, 2, seed=2)
    recall(adata, seed=1, draws=3, work_dir=tmp_path, **FAST)
    tested = int((adata.uns["recall"]["stability"]["n_clusters"] > 0).sum())
    assert len(reads) == len(clusterings) >= tested, "one read per clustering"


def test_out_of_core_draws_hold_no_whole_embedding_after_it_is_stored(tmp_path, monkeypatch):
    """With a work directory, each draw's whole embedding waits in the work store: while the
    draws' graphs are built and while they are clustered and tested, the client holds none
    of them (nor a view of its first PCs pinning one)."""
    made: list[weakref.ref] = []
    held: list[int] = []
    real_compute = ClientThreads.compute
    real_graph, real_calibrate = draw_module.neighbor_graph, run_module.calibrate_draws

    def alive() -> int:
        gc.collect()
        return sum(ref() is not None for ref in made)

    def embedding(self, collection):
        future = real_compute(self, collection)
        made.append(weakref.ref(future.result()))  # only embeddings are computed this way
        return future

    def graph(*args, **kwargs):
        held.append(alive())
        return real_graph(*args, **kwargs)

    def calibrating(*args, **kwargs):
        held.append(alive())
        return real_calibrate(*args, **kwargs)

    monkeypatch.setattr(ClientThreads, "compute", embedding)
    monkeypatch.setattr(draw_module, "neighbor_graph", graph)
    monkeypatch.setattr(run_module, "calibrate_draws", calibrating)
    adata = simulate_dense(300, 500, 2, seed=2)
    with dask.config.set({"recall.draws-at-once": 1}):  # one graph at a time, in order
        recall(adata, seed=1, draws=3, work_dir=tmp_path, **FAST)
    assert len(made) == 3 and held == [0, 0, 0, 0]
    assert adata.obsm["X_recall_pca"].shape == (300, RecallParams().n_pcs)


METHODS = {
    # Nulls without overdispersion with the R package's depth-blind fit (see
    # docs/explanation/depth.md: with each cell's depth they fail composition-differing groups,
    # and warn).
    **{
        null: {
            "null_method": null,
            **({"depth": "none"} if null in NULLS_WITHOUT_OVERDISPERSION else {}),
        }
        for null in NULL_METHODS
    },
    "countsplit": {"method": "countsplit"},
    "leiden": {"algorithm": "leiden"},
}


@pytest.mark.parametrize("options", METHODS.values(), ids=METHODS.keys())
def test_draws_work_with_every_method(options):
    adata = simulate_dense(500, 600, 3, de_prob=0.15, seed=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the starting resolution", UserWarning)
        recall(adata, draws=3, seed=1, **FAST, **options)
    record = adata.uns["recall"]
    assert record["stability"]["passed"].shape == (record["n_iterations"], 3)
    assert adjusted_rand_score(adata.obs["group"], adata.obs["recall"]) >= 0.9
    assert ((adata.obs["recall_confidence"] > 0) & (adata.obs["recall_confidence"] <= 1)).all()


@pytest.mark.parametrize(
    "options",
    [
        {"draws": 0},
        {"draws": -1},
        {"draws": 2.5},
        {"draws": True},
        {"agreement": 0.0},
        {"agreement": 1.5},
    ],
    ids=["zero", "negative", "fraction", "bool", "agreement-0", "agreement-1.5"],
)
def test_bad_draws_or_agreement_is_one_clear_error(options):
    with pytest.raises(InputError, match=r"^--(draws|agreement) must be"):
        RecallParams(**options)
