"""Today's answers stay today's answers: runs on PBMC 3k (seeds 0-2) and on simulated data,
each method and draws included, against what ``tests/golden/make_regression.py`` stored.

Labels, the first clusters, the confidence and every stored entry of ``uns['recall']`` must
be identical; the embedding may move in the last digits (summation order), to 1e-10.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
from make_regression import answers, cases, run_case  # noqa: E402

from recall_dask.dask_cluster import ClusterConfig, dask_client  # noqa: E402


@pytest.fixture(scope="module")
def stored() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "regression.npz") as fixture:
        return dict(fixture)


@pytest.mark.parametrize("name", list(cases()))
def test_same_answers_as_stored(name, stored):
    make, options = cases()[name]
    assert_stored(name, answers(name, run_case(make, options)), stored)


@pytest.mark.parametrize(
    ("name", "n_workers"),
    [("five-groups", 1), ("five-groups", 2), ("three-groups-draws", 1), ("five-groups-draws10", 2)],
)
def test_same_answers_as_stored_with_the_draws_tasks_on_workers(name, n_workers, stored):
    """The stored answers (made on dask's threaded scheduler, before the graphs and the
    clusterings became worker tasks) on a local cluster of one or two workers."""
    make, options = cases()[name]
    with dask_client(ClusterConfig(n_workers=n_workers, threads_per_worker=1)):
        got = answers(name, run_case(make, options))
    assert_stored(name, got, stored)


def assert_stored(name: str, got: dict[str, np.ndarray], stored: dict[str, np.ndarray]) -> None:
    want = {key: value for key, value in stored.items() if key.startswith(f"{name}/")}
    assert want, f"nothing stored for {name}"
    assert set(want) <= set(got), f"missing: {sorted(set(want) - set(got))}"
    for key, value in want.items():
        if key.endswith("/obsm/X_pca"):
            np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-10, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
