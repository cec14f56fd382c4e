"""The resolution loop: R's pair order, stopping rules, warning and iteration limit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import simulate_dense

from recall_dask.calibrate import CalibrationError, Iteration
from recall_dask.pipeline import recall


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
