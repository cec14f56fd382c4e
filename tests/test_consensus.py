"""The consensus of several draws' partitions, and its stability, on hand-made partitions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from recall_dask.consensus import adjusted_rand_index, consensus, matched, medoid


@pytest.mark.parametrize("seed", range(5))
def test_adjusted_rand_index_is_sklearns(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 4, size=200), rng.integers(0, 6, size=200)
    b[:120] = a[:120]
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    assert adjusted_rand_index(a, a) == 1.0
    assert adjusted_rand_index(np.zeros(9, int), np.zeros(9, int)) == 1.0


def test_medoid_agrees_best_with_the_others():
    base = np.repeat([0, 1, 2], 4)
    odd = np.repeat([0, 1], 6)
    near = base.copy()
    near[0] = 1
    assert medoid([odd, near, base, base.copy()]) == 2  # the first of the two best
    assert medoid([base]) == 0


def test_medoid_among_some_partitions_still_agrees_with_all():
    """Restricted to the draws with the run's number of clusters, the medoid is the one of them
    that agrees best with every draw, and the consensus keeps its clusters."""
    base = np.repeat([0, 1, 2], 4)
    odd = np.repeat([0, 1], 6)
    other = np.repeat([1, 0], 6)
    other[0] = 1
    partitions = [base, odd, base.copy(), other]
    assert medoid(partitions, among=[1, 3]) == 1
    assert medoid(partitions, among=[3]) == 3
    agreed = consensus(partitions, among=[1, 3])
    assert agreed.medoid == 1 and agreed.labels.max() + 1 <= 2


def test_clusters_are_renamed_to_the_reference_cluster_they_overlap_most():
    reference = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    labels = np.array([5, 5, 3, 3, 3, 3, 0, 0])
    np.testing.assert_array_equal(matched(labels, reference), [0, 0, 1, 1, 1, 1, 2, 2])
    tie = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    reference_tie = np.array([0, 1, 0, 0, 1, 1, 2, 2])
    # cluster 1 of ``tie`` overlaps reference 0 and 1 once each: the lower name wins
    assert matched(tie, reference_tie)[0] == 0


def test_majority_label_per_cell_with_ties_to_the_medoid():
    medoid_partition = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    other = np.array([0, 0, 0, 1, 1, 1, 1, 1])  # cell 3 moves
    third = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    agreed = consensus([other, medoid_partition, third])
    assert agreed.medoid == 1
    np.testing.assert_array_equal(agreed.labels, medoid_partition)
    np.testing.assert_allclose(agreed.confidence, [1, 1, 1, 2 / 3, 1, 1, 1, 1])
    np.testing.assert_allclose(agreed.cluster_stability, [(3 + 2 / 3) / 4, 1.0])
    np.testing.assert_allclose(agreed.pair_separation, [[0, 1], [1, 0]])

    # Two draws disagree on cell 3; the tie goes to the medoid (the first of two equals).
    tied = consensus([medoid_partition, other])
    assert tied.medoid == 0
    np.testing.assert_array_equal(tied.labels, medoid_partition)
    assert tied.confidence[3] == 0.5


def test_a_split_seen_by_few_draws_is_outvoted():
    whole = np.zeros(10, dtype=int)
    split = np.repeat([0, 1], 5)
    agreed = consensus([split, whole, whole, whole])
    np.testing.assert_array_equal(agreed.labels, whole)
    np.testing.assert_allclose(agreed.confidence, 1.0)  # the split draw's halves both map to 0


def test_consensus_relabels_by_size_and_counts_separations():
    a = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    b = np.array([2, 2, 0, 0, 0, 1, 1, 1, 1])  # the same partition, other names
    merged = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])  # the two small clusters merged
    agreed = consensus([a, b, merged])
    np.testing.assert_array_equal(agreed.labels, [2, 2, 1, 1, 1, 0, 0, 0, 0])
    # Clusters 1 and 2 are separate in two draws of three, cluster 0 in all of them.
    np.testing.assert_allclose(agreed.pair_separation, [[0, 1, 1], [1, 0, 2 / 3], [1, 2 / 3, 0]])
