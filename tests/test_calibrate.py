"""The resolution loop: R's pair order, stopping rules, warning and iteration limit."""

from __future__ import annotations

import threading

import dask
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import as_row_chunked, simulate_dense
from scipy.stats import mannwhitneyu

from recall_dask import calibrate as calibrate_module
from recall_dask.api import recall
from recall_dask.calibrate import (
    CalibrationError,
    Iteration,
    Step,
    agreed_draws,
    draw_answers,
    draws_needed,
    resolutions,
)
from recall_dask.errors import InputError
from recall_dask.graph import (
    ClusteringStopped,
    cluster_graph,
    exact_neighbors,
    shared_nearest_neighbors,
)
from recall_dask.methods.recall import selected_gene_counts
from recall_dask.params import RecallParams
from recall_dask.stats.knockoff import knockoff_threshold
from recall_dask.stats.markers import MARKERS_PER_PAIR
from recall_dask.tasks import ClientThreads


def selected_matrix(zero_pairs: list[tuple[int, int]], n: int = 4) -> np.ndarray:
    counts = np.full((n, n), 7)
    np.fill_diagonal(counts, -1)
    for a, b in zero_pairs:
        counts[a, b] = counts[b, a] = 0
    return counts


def test_failing_pair_follows_r_loop_order():
    # R visits (1,0), (2,0), (2,1), (3,0) ...: (1,2) comes before (0,3).
    iteration = Iteration(0.8, np.zeros(4, dtype=int), selected_matrix([(0, 3), (1, 2)]))
    assert iteration.failing_pair == (1, 2)
    assert Iteration(0.8, np.zeros(4, dtype=int), selected_matrix([])).failing_pair is None


def test_summary_records_the_trace():
    summary = Iteration(0.64, np.zeros(4, dtype=int), selected_matrix([(2, 3)])).summary()
    assert summary["n_clusters"] == 4 and summary["n_pairs_tested"] == 6
    assert summary["failing_pair"] == [2, 3] and summary["resolution"] == 0.64


def test_first_resolution_accepted_warns():
    adata = simulate_dense(600, 800, 3, de_prob=0.2, seed=2)
    with pytest.warns(UserWarning, match="under-clustered"):
        recall(adata, resolution_start=0.05, n_hvg=300)
    assert adata.uns["recall"]["n_iterations"] == 1


def test_iteration_limit_stops_with_a_clear_message():
    adata = simulate_dense(600, 800, 1, seed=4)
    with pytest.raises(CalibrationError, match="after 1 iterations"):
        recall(adata, max_iterations=1, n_hvg=300)


def test_resolutions_drop_by_the_reduction_percentage():
    steps = resolutions(RecallParams(resolution_start=1.0, reduction_percentage=0.25))
    assert len(steps) == RecallParams().max_iterations
    np.testing.assert_allclose(steps[:4], [1.0, 0.75, 0.5625, 0.421875], rtol=1e-15)


@pytest.mark.parametrize("algorithm", ["louvain", "leiden"])
def test_clustering_ahead_changes_nothing(algorithm):
    """Resolutions clustered ahead on other threads give the one-at-a-time iterations."""
    traces = []
    for threads in (1, 3):
        adata = simulate_dense(600, 800, 1, seed=4)
        with dask.config.set({"recall.clustering-threads": threads}):
            recall(adata, n_hvg=300, algorithm=algorithm)
        record = adata.uns["recall"]
        traces.append(
            [
                (it["resolution"], it["n_clusters"], it["n_selected"].tolist())
                for it in (record["iterations"][str(i)] for i in range(record["n_iterations"]))
            ]
        )
        traces[-1].append(adata.obs["recall"].tolist())
    assert len(traces[0]) > 2, "the loop must take several iterations"
    assert traces[0] == traces[1]


def test_a_stopped_clustering_ends_at_its_next_start(rng):
    x = rng.normal(size=(200, 5))
    snn = shared_nearest_neighbors(exact_neighbors(x, 10))
    stop = threading.Event()
    stop.set()
    for algorithm in ("louvain", "leiden"):
        with pytest.raises(ClusteringStopped):
            cluster_graph(snn, 0.8, algorithm=algorithm, stop=stop)


def _planted_pairs(rng, n_genes=60, per_cluster=45):
    """Three clusters, each raising its own 25 genes, and artificial twins with no signal."""
    labels = np.repeat([0, 1, 2], per_cluster)
    means = np.ones((3, n_genes))
    for cluster in range(3):
        means[cluster, rng.choice(n_genes, 25, replace=False)] = 4.0
    genes = rng.poisson(means[labels]).astype(float)
    twins = rng.poisson(2.0, size=genes.shape).astype(float)
    return sp.csr_matrix(np.hstack([genes, twins])), labels


@pytest.mark.parametrize("chunks", [-1, 37], ids=["one-chunk", "37-rows"])
def test_markers_are_each_pairs_strongest_knockoff_selections(rng, chunks):
    """Oracle: for each pair, W from scipy's rank-sum p-values of the gene and its twin, the
    knockoff+ threshold, the selected genes and the top ones by W."""
    matrix, labels = _planted_pairs(rng)
    n_genes = matrix.shape[1] // 2
    counts, markers = selected_gene_counts(as_row_chunked(matrix, chunks), labels, n_genes, 0.05)
    dense = matrix.toarray()
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        test = mannwhitneyu(dense[labels == a], dense[labels == b], method="asymptotic")
        p = test.pvalue
        w = -np.log10(p[:n_genes]) + np.log10(p[n_genes:])
        # U of a above its null mean: a ranks higher.
        higher = np.where(
            test.statistic[:n_genes] > (labels == a).sum() * (labels == b).sum() / 2, a, b
        )
        chosen = np.flatnonzero(w >= knockoff_threshold(w))
        top = chosen[np.argsort(-w[chosen], kind="stable")][:MARKERS_PER_PAIR]
        assert counts[a, b] == counts[b, a] == chosen.size > MARKERS_PER_PAIR
        mine = (markers.cluster_a == a) & (markers.cluster_b == b)
        np.testing.assert_array_equal(markers.gene[mine], top)
        np.testing.assert_allclose(markers.W[mine], w[top], rtol=1e-9)
        np.testing.assert_array_equal(markers.higher_in[mine], higher[top])
    assert set(zip(markers.cluster_a, markers.cluster_b, strict=True)) == {(0, 1), (0, 2), (1, 2)}


def test_one_cluster_has_no_markers(rng):
    matrix, _ = _planted_pairs(rng)
    counts, markers = selected_gene_counts(
        as_row_chunked(matrix, -1), np.zeros(matrix.shape[0], dtype=np.int64), 60, 0.05
    )
    assert counts.tolist() == [[-1]]
    assert markers.gene.size == markers.W.size == markers.cluster_a.size == 0


@pytest.mark.parametrize(
    ("threads", "n_draws", "clustered"),
    [(1, 1, 2), (2, 1, 2), (4, 1, 4), (2, 2, 1), (2, 10, 1), (4, 3, 2), (4, 2, 2)],
)
def test_clusters_one_resolution_ahead_per_spare_thread(
    monkeypatch, rng, threads, n_draws, clustered
):
    """Accepted at once, the loop has asked each draw for the current resolution and the spare
    clustering threads (at least one) shared among the draws: none ahead when the draws' own
    clusterings fill the threads, so no clustering is wasted on a draw that stops."""
    asked: list[float] = []
    submit = ClientThreads.submit

    def recording(self, name, fn, /, *args, **kwargs):
        if fn is calibrate_module.clustered:  # not the graph's components
            asked.append(args[1])
        return submit(self, name, fn, *args, **kwargs)

    monkeypatch.setattr(ClientThreads, "submit", recording)
    snn = shared_nearest_neighbors(exact_neighbors(rng.normal(size=(200, 5)), 10))

    def accept(labels):
        k = int(labels.max()) + 1
        return selected_matrix([], k), None

    params = RecallParams(draws=n_draws)
    with (
        dask.config.set({"recall.clustering-threads": threads}),
        pytest.warns(UserWarning, match="accepted after a single iteration"),
    ):
        calibrate_module.calibrate_draws([snn] * n_draws, [accept] * n_draws, params)
    assert (
        sorted(asked, reverse=True) == np.repeat(resolutions(params)[:clustered], n_draws).tolist()
    )


# -- several draws: each runs R's loop, the answer is where enough of them end -------------


def answer(n_clusters: int, resolution: float = 0.8) -> Iteration:
    """A draw's answer: a clustering with ``n_clusters`` clusters whose pairs all pass."""
    labels = np.arange(4 * n_clusters) % n_clusters
    return Iteration(resolution, labels, selected_matrix([], n_clusters))


@pytest.mark.parametrize("agreement", [1.0, 0.5, 0.25, 1e-9])
@pytest.mark.parametrize(
    "zero_pairs", [[], [(0, 3)], [(1, 2), (0, 3)], [(2, 3)]], ids=["none", "one", "two", "last"]
)
def test_one_draw_is_rs_rule_whatever_the_agreement(zero_pairs, agreement):
    """With one draw the loop ends exactly when every pair selects a gene, and the answer is
    that clustering."""
    iteration = Iteration(0.8, np.zeros(4, dtype=int), selected_matrix(zero_pairs))
    step = Step(0.8, (iteration,))
    assert step.finished == (iteration.failing_pair is None) == (not zero_pairs)
    if step.finished:
        assert draw_answers([step]) == [iteration]
        assert agreed_draws([iteration], agreement) == [0]


@pytest.mark.parametrize(
    ("n_draws", "agreement", "needed"),
    [(10, 0.5, 5), (4, 0.5, 2), (5, 0.5, 3), (10, 0.3, 3), (3, 1.0, 3), (7, 1 / 7, 1)],
)
def test_agreement_counts_draws_at_its_boundary(n_draws, agreement, needed):
    """The answer has the most clusters that at least a fraction ``agreement`` of the draws
    found; exactly that fraction is enough (0.3 x 10 is 3, not 4)."""
    assert draws_needed(n_draws, agreement) == needed
    for n_more in range(n_draws + 1):
        answers = [answer(3)] * n_more + [answer(2)] * (n_draws - n_more)
        chosen = agreed_draws(answers, agreement)
        expected = 3 if n_more >= needed else 2
        assert {answers[m].n_clusters for m in chosen} == {expected}
        assert len(chosen) == sum(a.n_clusters == expected for a in answers)


def test_answer_is_the_median_count_of_the_draws():
    answers = [answer(k) for k in (8, 8, 10, 6, 8)]
    assert agreed_draws(answers, 0.5) == [0, 1, 4]
    assert agreed_draws(answers, 1 / 5) == [2], "one draw of five is enough: the most clusters"
    assert agreed_draws(answers, 1.0) == [3], "every draw must reach it: the fewest clusters"


def test_a_draw_that_passed_at_a_higher_resolution_has_stopped():
    """A draw that passed higher up is not clustered again, and stays stopped."""
    passing = Iteration(0.64, np.zeros(4, dtype=int), selected_matrix([]))
    failing = Iteration(0.64, np.zeros(4, dtype=int), selected_matrix([(0, 1)]))
    step = Step(0.64, (None, failing, passing), np.array([True, False, False]))
    assert step.stopped.tolist() == [True, False, True] and not step.finished
    assert step.passed.tolist() == [False, False, True]


def test_loop_runs_each_draw_until_it_stops(rng):
    """Draw 0 passes at the first resolution, draw 1 at the third, draw 2 at the fifth: each
    is tested until it passes and never after, and its answer is where it passed."""
    snn = shared_nearest_neighbors(exact_neighbors(rng.normal(size=(300, 5)), 10))
    passes_at = {0: 1, 1: 3, 2: 5}
    calls = {draw: [] for draw in passes_at}

    def test_for(draw):
        def pair_test(labels):
            k = int(labels.max()) + 1
            calls[draw].append(k)
            fails = k > 1 and len(calls[draw]) != passes_at[draw]
            return selected_matrix([(0, 1)] if fails else [], k), None

        return pair_test

    params = RecallParams(agreement=2 / 3)
    steps = calibrate_module.calibrate_draws([snn] * 3, [test_for(d) for d in range(3)], params)
    assert len(steps) == 5 and steps[-1].finished
    assert not any(step.finished for step in steps[:-1])
    assert {draw: len(asked) for draw, asked in calls.items()} == passes_at
    assert [step.draws[0] is None for step in steps] == [False, True, True, True, True]
    answers = draw_answers(steps)
    assert [a.resolution for a in answers] == [steps[i].resolution for i in (0, 2, 4)]


def test_each_clustering_takes_seurats_starts_and_iterations(monkeypatch, rng):
    """--louvain-starts and --louvain-iterations reach every clustering (Seurat's n.start and
    n.iter), as does Seurat's fixed random.seed 0."""
    seen: list[dict] = []
    real = calibrate_module.cluster_graph

    def recording(graph, resolution, **kwargs):
        seen.append(kwargs)
        return real(graph, resolution, **kwargs)

    monkeypatch.setattr(calibrate_module, "cluster_graph", recording)
    snn = shared_nearest_neighbors(exact_neighbors(rng.normal(size=(200, 5)), 10))

    def accept(labels):
        return selected_matrix([], int(labels.max()) + 1), None

    params = RecallParams(louvain_starts=3, louvain_iterations=4)
    with pytest.warns(UserWarning, match="accepted after a single iteration"):
        calibrate_module.calibrate(snn, accept, params)
    assert seen and all(
        (kw["n_starts"], kw["n_iterations"], kw["seed"]) == (3, 4, 0) for kw in seen
    )


@pytest.mark.parametrize("option", ["louvain_starts", "louvain_iterations"])
def test_starts_and_iterations_must_be_positive(option):
    with pytest.raises(InputError, match=f"--{option.replace('_', '-')}"):
        RecallParams(**{option: 0})
