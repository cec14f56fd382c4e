"""The consensus of several draws' partitions, and its stability, on hand-made partitions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from recall_dask.consensus import (
    adjusted_rand_index,
    calibrated_consensus,
    consensus,
    matched,
    medoid,
)


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


# -- the consensus passes the draws' own pair tests -------------------------------------------

#: Three true groups of ten cells; draws 0 and 1 split group 0 in two, draw 2 does not.
TRUTH = np.repeat([0, 1, 2], 10)
SPLIT = np.where(np.arange(30) < 5, 3, TRUTH)


def _truth_test(truth: np.ndarray, passes: set[tuple[int, int]] = frozenset()):
    """A pair test that selects genes for a pair of clusters only if they hold different
    true groups (by majority), or if the pair of true groups is listed in ``passes``."""

    def test(labels: np.ndarray):
        k = int(labels.max()) + 1
        group = np.array([np.bincount(truth[labels == c]).argmax() for c in range(k)])
        first = np.array([np.flatnonzero(labels == c)[0] for c in range(k)])
        selected = np.full((k, k), -1)
        for a in range(k):
            for b in range(k):
                if a != b:
                    same = group[a] == group[b]
                    listed = tuple(sorted((first[a], first[b]))) in passes
                    selected[a, b] = 0 if same and not listed else 3
        return selected, f"markers of draw {id(test)}"

    return test


def test_merged_counts_a_vote_for_either_cluster():
    partitions = [SPLIT, SPLIT.copy(), TRUTH]
    agreed = consensus(partitions)
    assert agreed.labels.max() == 3
    a, b = agreed.labels[0], agreed.labels[9]
    assert agreed.confidence[0] == pytest.approx(2 / 3)
    joined = agreed.merged(min(a, b), max(a, b), partitions)
    np.testing.assert_array_equal(joined.labels, TRUTH)
    np.testing.assert_allclose(joined.confidence, 1.0)
    np.testing.assert_allclose(joined.cluster_stability, 1.0)
    assert joined.medoid == agreed.medoid


def test_a_pair_too_few_draws_tell_apart_is_merged():
    partitions = [SPLIT, SPLIT.copy(), TRUTH]
    agreed = consensus(partitions)
    tests = [_truth_test(TRUTH) for _ in partitions]
    calibrated = calibrated_consensus(agreed, partitions, tests, needed=2)
    np.testing.assert_array_equal(calibrated.consensus.labels, TRUTH)
    assert len(calibrated.merges) == 1
    merge = calibrated.merges[0]
    assert (merge.cells_a, merge.cells_b, merge.n_draws_selecting) == (5, 5, 0)
    assert calibrated.merged_into().tolist() == [0]
    assert calibrated.record()["cells_a"].tolist() == [5]
    off = ~np.eye(3, dtype=bool)
    assert (calibrated.pair_support[off] == 1.0).all() and (
        calibrated.agreed_n_selected[off] == 3
    ).all()
    assert calibrated.n_selected.shape == (3, 3, 3)
    # Without the merge, the consensus had a pair that no draw selects a gene for.
    before = np.stack([test(agreed.labels)[0] for test in tests])
    assert ((before > 0).sum(axis=0) < 2).any()


def test_a_pair_enough_draws_tell_apart_stays():
    partitions = [SPLIT, SPLIT.copy(), TRUTH]
    agreed = consensus(partitions)
    split_pair = {(0, 5)}  # cells 0 and 5 lead the two halves of group 0
    tests = [_truth_test(TRUTH, split_pair), _truth_test(TRUTH, split_pair), _truth_test(TRUTH)]
    calibrated = calibrated_consensus(agreed, partitions, tests, needed=2)
    assert calibrated.merges == []
    np.testing.assert_array_equal(calibrated.consensus.labels, agreed.labels)
    np.testing.assert_array_equal(calibrated.consensus.confidence, agreed.confidence)
    a, b = agreed.labels[0], agreed.labels[5]
    assert calibrated.pair_support[a, b] == pytest.approx(2 / 3)
    assert calibrated.agreed_n_selected[a, b] == 3
    # With all three draws needed, the same pair is merged.
    assert len(calibrated_consensus(agreed, partitions, tests, needed=3).merges) == 1


def test_the_weakest_failing_pair_is_merged_first():
    """Group 0 is split by every draw, group 1 by two; both splits fail with three draws
    needed, and group 0's (told apart by one draw) goes before group 1's (by two)."""
    both = np.where(
        np.arange(30) < 5, 3, np.where((np.arange(30) >= 10) & (np.arange(30) < 15), 4, TRUTH)
    )
    partitions = [both, both.copy(), np.where(np.arange(30) < 5, 3, TRUTH)]
    agreed = consensus(partitions)
    tests = [
        _truth_test(TRUTH, {(0, 5), (10, 15)}),
        _truth_test(TRUTH, {(10, 15)}),
        _truth_test(TRUTH),
    ]
    calibrated = calibrated_consensus(agreed, partitions, tests, needed=3)
    assert [m.n_draws_selecting for m in calibrated.merges] == [1, 2]
    np.testing.assert_array_equal(calibrated.consensus.labels, TRUTH)


def test_one_cluster_left_passes():
    partitions = [np.repeat([0, 1], 5), np.repeat([0, 1], 5)]
    agreed = consensus(partitions)
    calibrated = calibrated_consensus(
        agreed, partitions, [_truth_test(np.zeros(10, int))] * 2, needed=1
    )
    assert calibrated.consensus.labels.max() == 0 and len(calibrated.merges) == 1
