"""Simulated counts: streamed to Zarr chunk by chunk, equal to the in-memory simulation."""

from __future__ import annotations

import numpy as np
import pytest

from recall_dask.errors import InputError
from recall_dask.io import open_counts
from recall_dask.simulate import simulate, write_simulated


@pytest.mark.parametrize("chunk_size", [37, 1000, 5000], ids=["37-rows", "1000-rows", "one-chunk"])
def test_streamed_store_equals_in_memory_simulation(tmp_path, chunk_size):
    expected = simulate(2500, 300, 4, de_prob=0.2, seed=9)
    store = tmp_path / "sim.zarr"
    write_simulated(store, 2500, 300, 4, de_prob=0.2, seed=9, chunk_size=chunk_size)
    adata = open_counts(store)
    assert adata.X.chunks[0][0] == min(chunk_size, 2500)
    np.testing.assert_array_equal(adata.X.compute().toarray(), expected.X.toarray())
    assert adata.obs["group"].tolist() == expected.obs["group"].tolist()
    assert list(adata.obs_names[:2]) == ["cell0", "cell1"]


def test_groups_differ_and_a_single_group_does_not(tmp_path):
    many = simulate(4000, 500, 4, de_prob=0.3, seed=1)
    one = simulate(4000, 500, 1, seed=1)
    group = many.obs["group"].to_numpy()
    means = np.vstack([np.asarray(many.X[group == g].mean(axis=0)).ravel() for g in "0123"])
    assert np.abs(np.log1p(means[0]) - np.log1p(means[1])).max() > 0.5
    assert one.obs["group"].nunique() == 1
    assert (many.X.data == np.round(many.X.data)).all() and many.X.data.min() >= 0


def test_bad_sizes_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="--cells"):
        write_simulated(tmp_path / "x.zarr", 0, 10, 1)
    with pytest.raises(InputError, match="--de-prob"):
        write_simulated(tmp_path / "x.zarr", 10, 10, 2, de_prob=1.5)
    assert not (tmp_path / "x.zarr").exists()
    with pytest.raises(InputError, match="--groups"):
        simulate(10, 10, 0)
