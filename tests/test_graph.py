"""Oracle tests for kNN, SNN and modularity clustering (recall_dask.graph)."""

import json
import subprocess
import sys
import threading

import dask
import igraph as ig
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial.distance import cdist
from sklearn.metrics import adjusted_rand_score

from recall_dask.errors import InputError
from recall_dask.graph import (
    annoy_neighbors,
    cluster_graph,
    exact_neighbors,
    nearest_neighbors,
    neighbors,
    order_by_size,
    shared_nearest_neighbors,
)
from recall_dask.graph.cluster import _group_singletons
from recall_dask.graph.network import _network
from recall_dask.graph.snn import _min_shared


def _blobs(n_blobs, per_blob, dim=10, spread=12.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(n_blobs, dim))
    truth = np.repeat(np.arange(n_blobs), per_blob)
    return centers[truth] + rng.normal(size=(truth.size, dim)), truth


def _snn_of(x):
    return shared_nearest_neighbors(exact_neighbors(x, k=20))


@pytest.fixture(scope="module")
def five_blobs():
    x, truth = _blobs(5, 200)
    return _snn_of(x), truth


@pytest.fixture(scope="module")
def one_blob():
    return _snn_of(np.random.default_rng(1).normal(size=(2000, 10)))


def _modularity(snn, labels, resolution):
    upper = sp.triu(snn, k=1, format="coo")
    graph = ig.Graph(n=snn.shape[0], edges=np.column_stack((upper.row, upper.col)))
    return graph.modularity(labels.tolist(), weights=upper.data.tolist(), resolution=resolution)


# --- kNN -------------------------------------------------------------------------------


@pytest.mark.parametrize("n,dim,k", [(300, 5, 20), (50, 3, 1), (20, 2, 20)], ids=str)
def test_knn_matches_brute_force(n, dim, k):
    x = np.random.default_rng(n).normal(size=(n, dim))
    oracle = np.argsort(cdist(x, x), axis=1, kind="stable")[:, :k]
    knn = exact_neighbors(x, k=k)
    assert knn.shape == (n, k)
    np.testing.assert_array_equal(knn, oracle)
    np.testing.assert_array_equal(knn[:, 0], np.arange(n))


def test_knn_self_first_among_duplicates():
    x = np.zeros((30, 4))  # every distance ties at 0; more duplicates than k
    knn = exact_neighbors(x, k=20)
    np.testing.assert_array_equal(knn[:, 0], np.arange(30))
    assert all(len(set(row)) == 20 for row in knn.tolist())
    np.testing.assert_array_equal(knn, exact_neighbors(x, k=20))


@pytest.mark.parametrize("search", ["exact", "annoy"])
def test_knn_too_few_cells(search):
    with pytest.raises(InputError, match=r"fewer cells \(5\) than neighbors \(20\)"):
        nearest_neighbors(np.zeros((5, 3)), 20, search)


def test_annoy_finds_nearly_all_exact_neighbors():
    x = np.random.default_rng(7).normal(size=(3000, 10))
    annoy, exact = annoy_neighbors(x, k=20), exact_neighbors(x, k=20)
    assert annoy.shape == (3000, 20) and annoy.dtype == np.int64
    shared = np.mean([len(set(a) & set(b)) for a, b in zip(annoy, exact, strict=True)]) / 20
    assert shared > 0.97
    np.testing.assert_array_equal(annoy[:, 0], np.arange(3000))  # distinct points: self first
    distance = np.linalg.norm(x[annoy] - x[:, None, :], axis=2)
    assert np.all(np.diff(distance, axis=1) >= -1e-6), "each list ordered by distance"


def test_annoy_lists_do_not_depend_on_threads_or_batches(monkeypatch):
    x = np.random.default_rng(8).normal(size=(700, 6))
    whole = annoy_neighbors(x, k=15)
    monkeypatch.setattr(neighbors.os, "cpu_count", lambda: 5)
    with dask.config.set({"recall.annoy-query-batch": 7}):
        np.testing.assert_array_equal(annoy_neighbors(x, k=15), whole)


# --- SNN -------------------------------------------------------------------------------


def _snn_oracle(knn, prune):
    n, k = knn.shape
    sets = [set(row) for row in knn.tolist()]
    shared = np.array([[len(a & b) for b in sets] for a in sets], dtype=float)
    weight = shared / (2 * k - shared)
    weight[weight < prune] = 0.0
    return shared, weight


def _random_lists(n, k, seed):
    """Arbitrary kNN lists (self first), giving many pairs sharing exactly 2 and 3 cells."""
    rng = np.random.default_rng(seed)
    rows = [[i, *rng.choice(np.delete(np.arange(n), i), k - 1, replace=False)] for i in range(n)]
    return np.array(rows)


@pytest.mark.parametrize(
    "knn",
    [
        pytest.param(_random_lists(100, 20, 0), id="random-lists-k20"),
        pytest.param(exact_neighbors(np.random.default_rng(3).normal(size=(250, 4))), id="knn"),
    ],
)
def test_snn_matches_brute_force(knn):
    shared, oracle = _snn_oracle(knn, 1 / 15)
    snn = shared_nearest_neighbors(knn)
    assert isinstance(snn, sp.csr_matrix) and snn.has_sorted_indices
    np.testing.assert_allclose(snn.toarray(), oracle, rtol=0, atol=1e-15)
    assert (abs(snn - snn.T)).nnz == 0
    np.testing.assert_array_equal(snn.diagonal(), 1.0)  # s_ii = k, kept as in Seurat
    assert not np.any(snn.data == 0)


def test_snn_prune_edge_at_k20():
    knn = _random_lists(100, 20, 0)
    shared, _ = _snn_oracle(knn, 1 / 15)
    snn = shared_nearest_neighbors(knn, prune=1 / 15).toarray()
    assert np.any(shared == 2) and np.any(shared == 3)
    assert np.all(snn[shared == 2] == 0)  # 2/38 < 1/15: pruned
    np.testing.assert_allclose(snn[shared == 3], 3 / 37)  # 3/37 >= 1/15: kept
    assert _min_shared(20, 1 / 15) == 3
    assert _min_shared(20, 3 / 37) == 3  # equal to prune is kept
    assert _min_shared(20, 0.0) == 0
    kept_all = shared_nearest_neighbors(knn, prune=0.0).toarray()
    np.testing.assert_allclose(kept_all, shared / (40 - shared))


# --- clustering ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["louvain", "leiden"])
def test_blobs_recovered(five_blobs, algorithm):
    snn, truth = five_blobs
    labels = cluster_graph(snn, 0.8, algorithm=algorithm)
    assert labels.dtype.kind == "i"
    assert adjusted_rand_score(truth, labels) == 1.0
    np.testing.assert_array_equal(np.unique(labels), np.arange(5))


def test_resolution_controls_cluster_count(one_blob):
    counts = {r: cluster_graph(one_blob, r, n_starts=3).max() + 1 for r in (0.01, 0.05, 0.8)}
    assert counts[0.8] >= 3  # over-clustering of a single population
    assert counts[0.01] <= 2 and counts[0.05] <= 2
    assert counts[0.8] > counts[0.05]


def test_resolution_sweep_monotone(one_blob):
    counts = [cluster_graph(one_blob, r, n_starts=3).max() + 1 for r in (0.3, 0.6, 1.0, 1.5)]
    assert counts == sorted(counts) and counts[-1] > counts[0]


@pytest.mark.parametrize("algorithm", ["louvain", "leiden"])
def test_deterministic(one_blob, algorithm):
    first = cluster_graph(one_blob, 0.8, algorithm=algorithm, seed=7, n_starts=2)
    again = cluster_graph(one_blob, 0.8, algorithm=algorithm, seed=7, n_starts=2)
    np.testing.assert_array_equal(first, again)


def test_deterministic_across_processes(tmp_path):
    script = (
        "import numpy as np\n"
        "from recall_dask.graph import cluster_graph, exact_neighbors, "
        "shared_nearest_neighbors\n"
        "x = np.random.default_rng(5).normal(size=(600, 10))\n"
        "snn = shared_nearest_neighbors(exact_neighbors(x))\n"
        "print(cluster_graph(snn, 1.0, seed=3, n_starts=3).tolist())\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert runs[0].stdout == runs[1].stdout and len(set(json.loads(runs[0].stdout))) > 1


def test_labels_ordered_by_size(one_blob):
    labels = cluster_graph(one_blob, 1.2, n_starts=2)
    sizes = np.bincount(labels)
    assert np.all(np.diff(sizes) <= 0) and sizes.size > 2


def test_order_by_size_ties_by_first_cell():
    labels = np.array([7, 3, 3, 9, 7, 9, 5, 5, 5])
    np.testing.assert_array_equal(order_by_size(labels), [1, 2, 2, 3, 1, 3, 0, 0, 0])


def test_multistart_at_least_as_good_as_one_start(one_blob):
    one = cluster_graph(one_blob, 0.8, n_starts=1, seed=11)
    many = cluster_graph(one_blob, 0.8, n_starts=6, seed=11)
    assert _modularity(one_blob, many, 0.8) >= _modularity(one_blob, one, 0.8) - 1e-12


def test_warm_start_keeps_good_partition(five_blobs):
    snn, truth = five_blobs
    labels = cluster_graph(snn, 0.8, n_starts=1, initial=truth[::-1].copy())
    assert adjusted_rand_score(truth, labels) == 1.0
    with pytest.raises(InputError, match="initial partition"):
        cluster_graph(snn, 0.8, initial=truth[:10])


def test_unknown_algorithm(five_blobs):
    with pytest.raises(InputError, match="unknown clustering algorithm"):
        cluster_graph(five_blobs[0], 0.8, algorithm="walktrap")


# --- singletons ------------------------------------------------------------------------


def _sym(n, edges):
    rows, cols, vals = zip(*edges, strict=True)
    m = sp.coo_matrix((vals, (rows, cols)), shape=(n, n))
    return sp.csr_matrix(m + m.T)


def test_singleton_joins_highest_mean_connectivity():
    # cluster 0 = cells 0-3, cluster 1 = cells 4-5, cell 6 alone (label 2).
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    snn = _sym(7, [(6, 0, 0.2), (6, 1, 0.2), (6, 2, 0.2), (6, 3, 0.2), (6, 4, 0.35)])
    # mean to cluster 0 = 0.8 / 4 = 0.2; to cluster 1 = 0.35 / 2 = 0.175 -> 0
    np.testing.assert_array_equal(_group_singletons(labels, _network(snn))[6], 0)
    snn = _sym(7, [(6, 0, 0.2), (6, 1, 0.2), (6, 4, 0.3), (6, 5, 0.1)])
    # mean to 0 = 0.1, to 1 = 0.2 although the sums tie at 0.4 -> 1
    np.testing.assert_array_equal(_group_singletons(labels, _network(snn))[6], 1)


def test_singleton_ties_and_isolated_go_to_lowest_label():
    labels = np.array([0, 0, 1, 1, 2, 3])
    snn = _sym(6, [(4, 0, 0.2), (4, 2, 0.2), (0, 1, 0.5), (2, 3, 0.5)])
    merged = _group_singletons(labels, _network(snn))
    assert merged[4] == 0 and merged[5] == 0  # 4 ties 0 vs 1; 5 is isolated
    assert set(merged) == {0, 1}


def test_cluster_graph_merges_isolated_cell(five_blobs):
    snn, truth = five_blobs
    n = snn.shape[0]
    padded = sp.csr_matrix(sp.block_diag([snn, sp.identity(1)]))  # cell n has only self
    labels = cluster_graph(padded, 0.8, n_starts=2)
    assert adjusted_rand_score(truth, labels[:n]) == 1.0
    assert np.bincount(labels).min() > 1 and labels[n] == 0


def test_snn_rejects_out_of_range_indices():
    with pytest.raises(InputError, match="knn indices"):
        shared_nearest_neighbors(np.array([[0, 1], [1, 2]]))


@pytest.mark.parametrize("algorithm", ["louvain", "leiden"])
def test_modularity_close_to_igraph_multilevel(one_blob, algorithm):
    upper = sp.triu(one_blob, k=1, format="coo")
    graph = ig.Graph(n=one_blob.shape[0], edges=np.column_stack((upper.row, upper.col)))
    reference = graph.community_multilevel(weights=upper.data.tolist(), resolution=0.8)
    ours = cluster_graph(one_blob, 0.8, algorithm=algorithm, n_starts=3)
    best_known = _modularity(one_blob, np.array(reference.membership), 0.8)
    assert _modularity(one_blob, ours, 0.8) >= 0.99 * best_known


@pytest.mark.parametrize(("seed", "java_next_int"), [(42, -1170105035), (0, -1155484576)])
def test_java_random_matches_java(seed, java_next_int):
    """``new java.util.Random(seed).nextInt()``: Seurat's Louvain draws from this stream."""
    from recall_dask.graph.louvain import _java_next31, java_random

    unsigned = java_next_int % 2**32  # next(32) as unsigned; next(31) drops its lowest bit
    assert _java_next31(java_random(seed)) == unsigned >> 1


def test_seurat_louvain_never_lowers_quality(rng):
    from recall_dask.graph.louvain import java_random, louvain_local_moving, partition_quality

    points = np.vstack([rng.normal(c, 1.0, size=(60, 5)) for c in (0, 6, 12)])
    network = _network(shared_nearest_neighbors(exact_neighbors(points, 15)))
    resolution = 0.8 / network[2].sum()
    cluster = np.arange(points.shape[0])
    state = java_random(0)
    quality = partition_quality(*network, cluster, resolution)
    for _ in range(3):
        louvain_local_moving(*network, cluster, resolution, state)
        new_quality = partition_quality(*network, cluster, resolution)
        assert new_quality >= quality - 1e-12
        quality = new_quality


def _seurat_local_moving(indptr, indices, weights, node_weight, cluster, resolution, state):
    """Seurat's ``runLocalMovingAlgorithm`` transcribed line by line in plain Python: the
    oracle for the optimised kernel, which must make exactly the same moves."""
    from recall_dask.graph.louvain import _java_next_int

    n = node_weight.size
    order = list(range(n))
    for i in range(n):
        j = _java_next_int(state, n)
        order[i], order[j] = order[j], order[i]
    cluster_weight, cluster_size = np.zeros(n), np.zeros(n, dtype=np.int64)
    for i in range(n):
        cluster_weight[cluster[i]] += node_weight[i]
        cluster_size[cluster[i]] += 1
    unused = [c for c in range(n - 1, -1, -1) if cluster_size[c] == 0]
    n_stable, i, update = 0, 0, False
    while n_stable < n:
        node = order[i]
        weight_to = {}
        for e in range(indptr[node], indptr[node + 1]):
            c = cluster[indices[e]]
            weight_to[c] = weight_to.get(c, 0.0) + weights[e]
        current = cluster[node]
        cluster_weight[current] -= node_weight[node]
        cluster_size[current] -= 1
        if cluster_size[current] == 0:
            unused.append(current)
        best, best_gain = -1, 0.0
        for c, w in weight_to.items():
            gain = w - node_weight[node] * cluster_weight[c] * resolution
            if gain > best_gain or (gain == best_gain and c < best):
                best, best_gain = c, gain
        if best_gain == 0.0:
            best = unused.pop()
        cluster_weight[best] += node_weight[node]
        cluster_size[best] += 1
        n_stable = n_stable + 1 if best == current else 1
        update = update or best != current
        cluster[node] = best
        i = (i + 1) % n
    relabel = np.cumsum(cluster_size > 0) - 1
    cluster[:] = relabel[cluster]
    return update


def _seurat_reduced_network(indptr, indices, weights, node_weight, cluster, n_clusters):
    """Seurat's ``Network.createReducedNetwork`` in plain Python: the oracle for
    ``reduce_network``. A dict keeps the neighboring clusters in the order first met."""
    members = [[] for _ in range(n_clusters)]
    for node, c in enumerate(cluster.tolist()):
        members[c].append(node)
    reduced_indptr, reduced_indices, reduced_weights = [0], [], []
    reduced_node_weight = np.zeros(n_clusters)
    for c in range(n_clusters):
        weight_to = {}
        for node in members[c]:
            reduced_node_weight[c] += node_weight[node]
            for e in range(indptr[node], indptr[node + 1]):
                other = cluster[indices[e]]
                if other != c:
                    weight_to[other] = weight_to.get(other, 0.0) + weights[e]
        reduced_indices += weight_to.keys()
        reduced_weights += weight_to.values()
        reduced_indptr.append(len(reduced_indices))
    return (*map(np.array, (reduced_indptr, reduced_indices, reduced_weights)), reduced_node_weight)


def _both_local_movings(network, cluster, resolution):
    """Our kernel (int32 cluster ids, as ``seurat_louvain`` passes them) and the oracle from
    the same partition and Java stream: same clusters, same stream afterwards."""
    from recall_dask.graph.louvain import java_random, louvain_local_moving

    ours, oracle = cluster.astype(network[1].dtype), cluster.copy()
    ours_state, oracle_state = java_random(11), java_random(11)
    _, n_clusters = louvain_local_moving(*network, ours, resolution, ours_state)
    _seurat_local_moving(*network, oracle, resolution, oracle_state)
    np.testing.assert_array_equal(ours, oracle)
    assert ours_state[0] == oracle_state[0] and n_clusters == oracle.max() + 1
    return ours


def _torus_network(side):
    """Unit-weight 4-neighbor torus: every node has the same weight, so gains tie often."""

    grid = np.arange(side * side).reshape(side, side)
    rows = np.concatenate([grid.ravel(), grid.ravel()])
    cols = np.concatenate([np.roll(grid, 1, axis).ravel() for axis in (0, 1)])
    return _network(_sym(side * side, zip(rows, cols, np.ones(rows.size), strict=True)))


@pytest.mark.parametrize(
    ("graph", "start", "resolution"),
    [
        ("blobs", "singletons", 0.3),
        ("blobs", "singletons", 0.8),
        ("blobs", "partition", 0.8),
        ("blobs", "partition", 2.0),
        ("torus", "singletons", 0.8),
        ("torus", "partition", 3.0),
    ],
)
def test_local_moving_makes_seurat_moves(graph, start, resolution):
    """Visit-order layout, known neighboring clusters and int32 ids change no move: same
    clusters and the same Java stream afterwards as Seurat's plain loop, on the graph and on
    the network of the clusters it found, which must be Seurat's bit for bit."""
    from recall_dask.graph.louvain import reduce_network

    if graph == "blobs":
        x, truth = _blobs(4, 150, spread=3.0, seed=2)
        network = _network(_snn_of(x))
    else:  # ties between equal gains, decided by the lower cluster id
        network = _torus_network(20)
        truth = np.arange(400) % 6
    scaled = resolution / network[2].sum()
    n = network[3].size
    # A partition leaves ids 0-2 and those above 7 empty: moves to empty clusters pop them.
    initial = np.arange(n) if start == "singletons" else (truth * 7) % 5 + 3
    found = _both_local_movings(network, initial, scaled)
    assert 1 < np.unique(found).size < n
    coarse = reduce_network(*network, found, found.max() + 1)
    oracle = _seurat_reduced_network(*network, found, found.max() + 1)
    for ours, expected in zip(coarse, oracle, strict=True):
        np.testing.assert_array_equal(ours, expected)
    k = coarse[3].size
    _both_local_movings(coarse, np.arange(k), scaled)
    _both_local_movings(coarse, np.arange(k) % 3, scaled)


def test_cluster_weights_summed_in_node_order():
    """Cluster weights are summed in node order, as Seurat's, not in visit order: node 4 has
    equal edge weight to clusters {0, 1, 2} and {3}, and (0.1 + 0.2) + 0.3 > 0.6 makes {3}
    the better one, where (0.3 + 0.2) + 0.1 == 0.6 would tie them."""
    snn = _sym(5, [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 1.0), (4, 0, 1.0), (4, 3, 1.0)])
    network = (snn.indptr, snn.indices, snn.data, np.array([0.1, 0.2, 0.3, 0.6, 1.0]))
    _both_local_movings(network, np.array([0, 0, 0, 1, 2]), 1.0)


def _seurat_louvain_oracle(network, resolution, seed, n_starts, initial):
    """Seurat's ``RunModularityClustering`` (Louvain, 10 iterations) from the plain-Python
    local moving and reduced network."""
    from recall_dask.graph.louvain import java_random, partition_quality

    def louvain(network, cluster):  # Seurat's runLouvainAlgorithm
        if network[3].size == 1:
            return False
        update = _seurat_local_moving(*network, cluster, scaled, state)
        n_clusters = cluster.max() + 1
        if n_clusters < network[3].size:
            coarse = np.arange(n_clusters)
            if louvain(_seurat_reduced_network(*network, cluster, n_clusters), coarse):
                cluster[:] = coarse[cluster]
                update = True
        return update

    scaled = resolution / network[2].sum()
    state = java_random(seed)
    best, best_quality = None, -np.inf
    for _ in range(n_starts):
        cluster = np.arange(network[3].size) if initial is None else initial.copy()
        for _ in range(10):
            if not louvain(network, cluster):
                break
        quality = partition_quality(*network, cluster, scaled)
        if quality > best_quality:
            best, best_quality = cluster.copy(), quality
    return best


@pytest.mark.parametrize(("graph", "resolution"), [("blobs", 1.0), ("torus", 2.0)])
@pytest.mark.parametrize("start", ["singletons", "partition"])
def test_seurat_louvain_matches_plain_loop(graph, resolution, start):
    """Whole Louvain runs (local moving, reduced networks, restarts, best start) give
    Seurat's partition."""
    from recall_dask.graph.louvain import seurat_louvain

    if graph == "blobs":
        network = _network(_snn_of(_blobs(4, 60, spread=3.0, seed=4)[0]))
    else:
        network = _torus_network(12)
    n = network[3].size
    initial = None if start == "singletons" else np.arange(n) % 9
    ours = seurat_louvain(network, resolution, 3, 3, 10, initial, threading.Event())
    oracle = _seurat_louvain_oracle(network, resolution, 3, 3, initial)
    np.testing.assert_array_equal(ours, oracle)
    assert 1 < np.unique(ours).size < n
