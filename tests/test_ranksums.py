"""Pairwise rank-sum log p-values against scipy's asymptotic Mann-Whitney test and an oracle."""

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from oracles import pairwise_log_pvalues, rank_sum_log_pvalue, van_elteren_log_pvalue
from scipy.special import log_ndtr
from scipy.stats import mannwhitneyu

from recall_dask.errors import InputError
from recall_dask.stats.ranksums import (
    ClusterGroups,
    StratifiedGroups,
    cluster_pairs,
    feature_block_for,
    per_feature_block,
)


def _tie_heavy(rng, n_cells, n_features, zero_fraction=0.7):
    """Expression-like matrix: few distinct levels (many ties) and mostly zeros."""
    levels = rng.choice([0.5, 1.0, 1.5, 2.0, 3.7], size=(n_cells, n_features))
    return levels * (rng.random((n_cells, n_features)) > zero_fraction)


def _as_dask(dense, row_chunks, dtype=np.float64):
    return da.from_array(sp.csr_matrix(dense.astype(dtype)), chunks=(row_chunks, -1), asarray=False)


def _scipy_pvalues(dense, labels, n_clusters):
    """p-values of scipy.stats.mannwhitneyu per pair and feature (scipy gives 1 where all tie)."""
    return np.array(
        [
            mannwhitneyu(dense[labels == a], dense[labels == b], method="asymptotic").pvalue
            for a, b in cluster_pairs(n_clusters)
        ]
    )


def _oracle(dense, labels, n_clusters):
    return np.array(
        [
            [
                rank_sum_log_pvalue(dense[labels == a, j], dense[labels == b, j])
                for j in range(dense.shape[1])
            ]
            for a, b in cluster_pairs(n_clusters)
        ]
    )


def test_cluster_pairs_row_major():
    assert cluster_pairs(4).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert cluster_pairs(1).shape == (0, 2)


@pytest.mark.parametrize("sizes", [(1, 1), (1, 2), (2, 2), (2, 40), (25, 31)], ids=str)
def test_reference_matches_scipy(sizes):
    rng = np.random.default_rng(sum(sizes))
    for _ in range(20):
        x = _tie_heavy(rng, sizes[0], 1)[:, 0]
        y = _tie_heavy(rng, sizes[1], 1)[:, 0]
        expected = mannwhitneyu(x, y, method="asymptotic").pvalue
        np.testing.assert_allclose(np.exp(rank_sum_log_pvalue(x, y)), expected, rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_matches_scipy_with_edge_features(dtype):
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(5), [1, 2, 40, 57, 33])
    rng.shuffle(labels)
    dense = _tie_heavy(rng, labels.size, 40)
    dense[:, 0] = 0  # all zero: every pair fully tied
    dense[labels == 2, 1] = 0  # one cluster all zero
    dense[:, 2] = 0
    dense[7, 2] = 4.2  # a single nonzero
    dense[:, 3] = rng.random(labels.size)  # no zeros, no ties
    dense[:, 4] = np.where(labels == 3, 1.0, 0.0)  # perfect separation of one cluster
    dense = dense.astype(dtype)
    ours = pairwise_log_pvalues(_as_dask(dense, (50, 83), dtype), labels, 5, feature_block=16)
    expected = _scipy_pvalues(dense.astype(np.float64), labels, 5)
    np.testing.assert_array_equal(ours[:, 0], 0.0)
    assert (expected > 1e-300).all()
    np.testing.assert_allclose(np.exp(ours), expected, rtol=1e-9)
    assert (ours <= 0).all()


def test_huge_effect_stays_finite_in_log_space():
    n_a, n_b = 2000, 3000
    labels = np.repeat([0, 1], [n_a, n_b])
    dense = np.zeros((n_a + n_b, 2))
    dense[n_a:, 0] = np.arange(1, n_b + 1)  # cluster 1 distinct and above all zeros of cluster 0
    dense[:, 1] = np.where(labels == 1, 2.0, 0.0)
    ours = pairwise_log_pvalues(_as_dask(dense, 1000), labels, 2)[0]

    n = n_a + n_b
    delta = n_a * n_b / 2
    sigma0 = np.sqrt(n_a * n_b / 12 * ((n + 1) - (n_a**3 - n_a) / (n * (n - 1))))
    ties1 = (n_a**3 - n_a) + (n_b**3 - n_b)
    sigma1 = np.sqrt(n_a * n_b / 12 * ((n + 1) - ties1 / (n * (n - 1))))
    expected = np.log(2) + log_ndtr(-(delta - 0.5) / np.array([sigma0, sigma1]))

    assert (mannwhitneyu(dense[:n_a], dense[n_a:], method="asymptotic").pvalue == 0).all()
    assert np.isfinite(ours).all() and (ours < -1000).all()
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_explicit_stored_zeros_count_as_zeros():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 60)
    dense = _tie_heavy(rng, 60, 9)
    coo = sp.coo_matrix(dense)
    extra = rng.random(dense.shape) < 0.2
    rows, cols = np.nonzero(extra & (dense == 0))
    with_zeros = sp.csr_matrix(
        (np.r_[coo.data, np.zeros(rows.size)], (np.r_[coo.row, rows], np.r_[coo.col, cols])),
        shape=dense.shape,
    )
    assert with_zeros.nnz > np.count_nonzero(dense)
    chunked = da.from_array(with_zeros, chunks=(25, -1), asarray=False)
    ours = pairwise_log_pvalues(chunked, labels, 3)
    np.testing.assert_allclose(ours, _oracle(dense, labels, 3), rtol=1e-12, atol=1e-14)


def test_negative_values_rank_below_zeros():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, 50)
    dense = _tie_heavy(rng, 50, 6) - _tie_heavy(rng, 50, 6)
    ours = pairwise_log_pvalues(_as_dask(dense, 20), labels, 3)
    np.testing.assert_allclose(ours, _oracle(dense, labels, 3), rtol=1e-12, atol=1e-14)


def test_many_clusters_share_one_merge():
    """Twelve clusters (two of them empty), ties across clusters on both sides of zero: every
    one of the 66 pairs, computed from one merge per feature, matches the per-pair oracle."""
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 10, 240)
    labels[labels == 3] = 11  # clusters 3 and 10 are empty
    dense = _tie_heavy(rng, 240, 9, zero_fraction=0.5) - _tie_heavy(rng, 240, 9)
    dense[:, 0] = rng.random(240)  # no ties, no zeros
    ours = pairwise_log_pvalues(_as_dask(dense, 37), labels, 12, feature_block=4)
    oracle = _oracle(dense, labels, 12)
    np.testing.assert_allclose(ours, oracle, rtol=1e-12, atol=1e-14)
    empty = np.isin(cluster_pairs(12), [3, 10]).any(axis=1)
    np.testing.assert_array_equal(ours[empty], 0.0)
    assert (ours[~empty] < 0).mean() > 0.9  # the oracle comparison is not vacuous


def test_empty_cluster_gives_log_p_zero():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 30)  # cluster 2 has no cells
    ours = pairwise_log_pvalues(_as_dask(_tie_heavy(rng, 30, 4), 30), labels, 3)
    np.testing.assert_array_equal(ours[1:], 0.0)  # pairs (0, 2) and (1, 2)


LAYOUTS = {
    "one-chunk": (101,),
    "uneven-chunks": (50, 1, 30, 20),
    "1-row-chunks": (1,) * 101,
    "37-row-chunks": (37, 37, 27),
}


@pytest.fixture(scope="module")
def four_clusters():
    rng = np.random.default_rng(2025)
    labels = rng.integers(0, 4, 101)
    dense = _tie_heavy(rng, 101, 23)
    dense[:, 5] = 0
    dense[labels == 1, 6] = 0
    return dense, labels, _oracle(dense, labels, 4)


@pytest.mark.parametrize("feature_block", [5, 7, 256])
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_distributed_matches_oracle(four_clusters, layout, feature_block):
    dense, labels, oracle = four_clusters
    ours = pairwise_log_pvalues(_as_dask(dense, layout), labels, 4, feature_block=feature_block)
    assert ours.shape == (6, 23)
    np.testing.assert_allclose(ours, oracle, rtol=1e-12, atol=1e-14)


def test_independent_of_chunking(four_clusters):
    dense, labels, _ = four_clusters
    results = [
        pairwise_log_pvalues(_as_dask(dense, layout), labels, 4, feature_block=7)
        for layout in LAYOUTS.values()
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_dense_blocks_accepted(four_clusters):
    dense, labels, oracle = four_clusters
    ours = pairwise_log_pvalues(da.from_array(dense, chunks=(40, -1)), labels, 4)
    np.testing.assert_allclose(ours, oracle, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "labels",
    [np.array([0, 1, 4]), np.array([0, -1, 1]), np.array([0, 1]), np.array([0.0, 1.0, 2.0])],
    ids=str,
)
def test_bad_labels_rejected(labels):
    with pytest.raises(InputError):
        pairwise_log_pvalues(_as_dask(np.ones((3, 2)), 3), labels, 3)


def test_feature_blocks_narrow_as_cells_grow():
    widths = [feature_block_for(n) for n in (10, 2_700, 100_000, 200_000, 500_000, 10**6, 10**8)]
    assert widths == [1024, 1024, 1024, 512, 256, 128, 128]


# -- van Elteren's test, stratified by groups of cells --------------------------------------


def _log_p(groups, pairs) -> np.ndarray:
    return groups.log_pvalues(pairs)


def _stratified(data: da.Array, labels, n_clusters: int, strata, **kwargs) -> np.ndarray:
    n_pairs = n_clusters * (n_clusters - 1) // 2
    lazy = per_feature_block(
        data, labels, n_clusters, _log_p, lead=(n_pairs,), strata=strata, **kwargs
    )
    return lazy.compute()


@pytest.fixture(scope="module")
def stratified_clusters():
    """Three clusters over four strata; cluster 2 has no cell in stratum 3."""
    rng = np.random.default_rng(77)
    labels = rng.integers(0, 3, 240)
    strata = rng.integers(0, 4, 240)
    strata[(labels == 2) & (strata == 3)] = 0
    dense = _tie_heavy(rng, 240, 11, zero_fraction=0.5)
    dense[:, 4] = 0
    oracle = np.array(
        [
            [
                van_elteren_log_pvalue(
                    dense[labels == a, j],
                    dense[labels == b, j],
                    strata[labels == a],
                    strata[labels == b],
                )
                for j in range(dense.shape[1])
            ]
            for a, b in cluster_pairs(3)
        ]
    )
    return dense, labels, strata, oracle


@pytest.mark.parametrize("feature_block", [3, 256])
@pytest.mark.parametrize("rows", [(240,), (37,) * 6 + (18,)], ids=["one-chunk", "37-rows"])
def test_van_elteren_matches_its_definition(stratified_clusters, rows, feature_block):
    dense, labels, strata, oracle = stratified_clusters
    ours = _stratified(_as_dask(dense, rows), labels, 3, strata, feature_block=feature_block)
    np.testing.assert_allclose(ours, oracle, rtol=1e-12, atol=1e-14)


def test_one_stratum_is_the_rank_sum_test_without_continuity_correction(four_clusters):
    dense, labels, _ = four_clusters
    ours = _stratified(_as_dask(dense, (101,)), labels, 4, np.zeros(101, dtype=int))
    varying = ~np.all(dense == dense[0], axis=0)
    for row, (a, b) in enumerate(cluster_pairs(4)):
        scipy = mannwhitneyu(
            dense[labels == a], dense[labels == b], use_continuity=False, method="asymptotic"
        )
        np.testing.assert_allclose(ours[row, varying], np.log(scipy.pvalue[varying]), rtol=1e-9)


def test_a_difference_only_the_strata_explain_is_not_significant():
    """Deep cells have higher values; cluster 0 is mostly deep cells, cluster 1 mostly
    shallow. Within each stratum the clusters are alike: the stratified test sees nothing
    where the plain one is certain."""
    rng = np.random.default_rng(5)
    strata = np.repeat([0, 1], 1000)
    labels = np.where(rng.random(2000) < np.where(strata == 1, 0.8, 0.2), 0, 1)
    values = rng.poisson(np.where(strata == 1, 3.0, 1.0))[:, None].astype(float)
    plain = pairwise_log_pvalues(_as_dask(values, (2000,)), labels, 2)
    stratified = _stratified(_as_dask(values, (2000,)), labels, 2, strata)
    assert plain[0, 0] < np.log(1e-20)
    assert stratified[0, 0] > np.log(1e-3)


def test_stratified_groups_add_up_to_the_plain_groups(stratified_clusters):
    dense, labels, strata, _ = stratified_clusters
    block = sp.csr_matrix(dense)
    plain = ClusterGroups.of([block], labels, 3)
    stratified = StratifiedGroups.of([block], labels, 3, strata)
    np.testing.assert_array_equal(stratified.sizes, plain.sizes)
    np.testing.assert_array_equal(stratified.nonzero_counts(), plain.nonzero_counts())
    np.testing.assert_allclose(stratified.sums(np.expm1), plain.sums(np.expm1), rtol=1e-12)
