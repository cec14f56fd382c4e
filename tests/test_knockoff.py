"""Knockoff statistics and the knockoff+ threshold: hand-computed cases and a brute-force oracle."""

import numpy as np
import pytest

from recall_dask.stats.knockoff import (
    knockoff_statistics,
    knockoff_threshold,
    n_selected,
    n_selected_per_pair,
    selected,
    strongest_selected,
)


def _brute_threshold(W, fdr, offset):
    """Direct transcription of the definition: scan sorted candidates, O(p^2)."""
    for t in sorted([0.0, *np.abs(W)]):
        if (offset + np.sum(-t >= W)) / max(1, np.sum(t <= W)) <= fdr:
            return t
    return np.inf


def test_nineteen_positives_are_not_enough():
    W = np.arange(1.0, 20.0)
    assert knockoff_threshold(W) == np.inf
    assert n_selected(W) == 0
    assert not selected(W).any()


def test_twenty_positives_are_all_selected():
    W = np.arange(1.0, 21.0)
    assert knockoff_threshold(W) == 0.0  # already at t = 0: (1 + 0) / 20 = 0.05
    assert n_selected(W) == 20


def test_negatives_shift_threshold():
    # 40 positives and one negative: already at t = 0, (1 + 1) / 40 = 0.05 passes.
    W = np.r_[np.arange(1.0, 41.0), -2.5]
    assert knockoff_threshold(W) == 0.0
    assert n_selected(W) == 40
    # Two negatives at -30.5: for t <= 30.5 the ratio is at least 3 / 40; above it only 10
    # positives remain, 1 / 10 > 0.05, so nothing is selected.
    W = np.r_[np.arange(1.0, 41.0), -30.5, -30.5]
    assert knockoff_threshold(W) == np.inf
    assert n_selected(W) == 0
    # 25 positives above two small negatives: at t = 0 and 0.5 the ratio is 3 / 25; at the
    # first candidate above the negatives (t = 10) it is 1 / 25.
    W = np.r_[np.arange(10.0, 35.0), -0.5, -0.5]
    assert knockoff_threshold(W) == 10.0
    assert n_selected(W) == 25


def test_ties_in_magnitude():
    # |W| = 5 for a positive and a negative: at t = 5 both count, (1 + 1) / 21 > 0.05; the
    # threshold moves to the next candidate, 6, where (1 + 0) / 20 = 0.05.
    W = np.r_[np.full(1, 5.0), -5.0, np.arange(6.0, 26.0)]
    assert knockoff_threshold(W) == 6.0
    assert n_selected(W) == 20


def test_zero_statistics():
    # W = 0 counts on both sides at t = 0 only, (1 + 3) / 23; the next candidate excludes it.
    W = np.r_[np.zeros(3), np.arange(1.0, 21.0)]
    assert knockoff_threshold(W) == 1.0
    assert n_selected(W) == 20
    assert knockoff_threshold(np.zeros(50)) == np.inf
    assert n_selected(np.zeros(50)) == 0


def test_threshold_zero_selects_zeros_like_r():
    # A loose fdr makes t = 0 pass; then W >= 0, including W == 0, is selected, as in R.
    W = np.r_[0.0, np.arange(1.0, 5.0)]
    assert knockoff_threshold(W, fdr=0.5) == 0.0
    assert n_selected(W, fdr=0.5) == 5


@pytest.mark.parametrize("seed", range(30))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    p = int(rng.integers(1, 300))
    W = np.round(rng.normal(loc=rng.uniform(0, 3), scale=2, size=p), 1)  # rounding makes ties
    W[rng.random(p) < 0.1] = 0.0
    fdr = float(rng.choice([0.05, 0.1, 0.2]))
    offset = int(rng.integers(0, 2))
    assert knockoff_threshold(W, fdr, offset) == _brute_threshold(W, fdr, offset)


def test_statistics_sign_and_scale():
    log_p_gene = np.log(np.array([1e-50, 0.5, 1e-3]))
    log_p_art = np.log(np.array([0.2, 1e-20, 1e-3]))
    W = knockoff_statistics(log_p_gene, log_p_art)
    np.testing.assert_allclose(W, [50 + np.log10(0.2), -np.log10(0.5) - 20, 0.0], atol=1e-12)
    assert W[0] > 40 and W[1] < -19


def test_statistics_finite_where_p_underflows():
    W = knockoff_statistics(np.array([[-5000.0, -1.0]]), np.array([[-1.0, -5000.0]]))
    assert W.shape == (1, 2) and np.isfinite(W).all()
    np.testing.assert_allclose(W, [[4999 / np.log(10), -4999 / np.log(10)]])


def test_statistics_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        knockoff_statistics(np.zeros(3), np.zeros(4))


def test_per_pair_counts_rows_independently():
    W2d = np.stack([np.arange(1.0, 21.0), np.arange(1.0, 21.0) - 10, np.zeros(20)])
    np.testing.assert_array_equal(n_selected_per_pair(W2d), [n_selected(row) for row in W2d])
    assert n_selected_per_pair(W2d)[0] == 20


def test_strongest_selected_are_the_top_selected_by_w(rng):
    W = np.r_[rng.normal(8.0, 3.0, 45), -1.0, 7.0, 7.0, rng.normal(0.0, 1.0, 30)]
    t = _brute_threshold(W, 0.05, 1)
    chosen = [j for j in sorted(range(W.size), key=lambda j: (-W[j], j)) if W[j] >= t]
    assert len(chosen) > 10
    np.testing.assert_array_equal(strongest_selected(W, n_top=10), chosen[:10])
    np.testing.assert_array_equal(strongest_selected(W, n_top=1000), chosen)
    assert strongest_selected(np.arange(1.0, 20.0)).size == 0, "nothing selected, no markers"
