"""Simulated counts: streamed to Zarr or 10x .h5 chunk by chunk, equal to the in-memory
simulation; the negative binomial sampler against scipy's distribution."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from oracles import nb_quantile
from scipy import stats

from recall_dask.cli import main
from recall_dask.errors import InputError
from recall_dask.io import ingest, open_counts
from recall_dask.simulate import (
    _BLOCK_ROWS,
    _DISPERSION,
    _STREAM,
    group_labels,
    group_means,
    simulate,
    simulate_block,
    write_simulated,
)


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


def test_depth_spread_widens_library_sizes():
    """The sd of log library size grows with ``depth_sd``, which adds its own spread to the
    counting noise (the exact law is checked block by block below)."""
    spread = []
    for depth_sd in (0.0, 0.4, 0.8):
        data = simulate(4000, 2000, 1, seed=3, depth_sd=depth_sd, log_mean=-2.0)
        spread.append(np.log(np.asarray(data.X.sum(axis=1)).ravel()).std())
    assert spread[0] < 0.3 and spread[0] < spread[1] < spread[2]
    assert spread[2] ** 2 - spread[0] ** 2 == pytest.approx(0.8**2, rel=0.15)


def test_bad_sizes_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="--cells"):
        write_simulated(tmp_path / "x.zarr", 0, 10, 1)
    with pytest.raises(InputError, match="--de-prob"):
        write_simulated(tmp_path / "x.zarr", 10, 10, 2, de_prob=1.5)
    assert not (tmp_path / "x.zarr").exists()
    with pytest.raises(InputError, match="--groups"):
        simulate(10, 10, 0)
    with pytest.raises(InputError, match=r"--depth-sd must be >= 0 \(got -0.1\)"):
        simulate(10, 10, 1, depth_sd=-0.1)


# -- the negative binomial sampler -------------------------------------------------------

NB_MEANS = [0.01, 0.5, 5.0, 50.0]


def _nb(mu: float):
    """scipy's NB with mean ``mu`` and variance ``mu + 0.2 mu^2`` (size 5)."""
    size = 1 / _DISPERSION
    return stats.nbinom(size, size / (size + mu))


@pytest.mark.parametrize("mu", NB_MEANS)
def test_nb_quantile_inverts_the_distribution_function(mu):
    """Each draw k is the quantile of its uniform: F(k - 1) <= u < F(k), up to rounding."""
    u = np.random.default_rng(3).random(20_000)
    u[:4] = [0.0, 1 - 1e-16, 0.5, np.nextafter(1.0, 0.0)]
    k = nb_quantile(np.full(u.size, mu), u)
    cdf = _nb(mu).cdf
    assert (cdf(k - 1) <= u + 1e-12).all()
    assert (u < cdf(k) + 1e-12).all()


@pytest.mark.parametrize("mu", NB_MEANS)
def test_nb_quantile_has_the_model_moments(mu):
    """Sample mean, variance and zero fraction within 5 standard errors of the NB values."""
    n = 400_000
    draws = nb_quantile(mu, np.random.default_rng(int(mu * 100)).random(n)).astype(np.float64)
    dist = _nb(mu)
    mean, var, _, excess = (float(m) for m in dist.stats(moments="mvsk"))
    assert var == pytest.approx(mu + _DISPERSION * mu**2)
    assert abs(draws.mean() - mean) < 5 * np.sqrt(var / n)
    # standard error of the sample variance: sqrt((mu4 - var^2) / n), mu4 = (excess + 3) var^2
    assert abs(draws.var(ddof=1) - var) < 5 * np.sqrt((excess + 2) * var**2 / n)
    p0 = float(dist.pmf(0))
    assert abs((draws == 0).mean() - p0) < 5 * np.sqrt(p0 * (1 - p0) / n)


@pytest.mark.parametrize("depth_sd", [0.0, 0.3, 0.8])
def test_blocks_are_the_sampler_applied_to_the_block_uniforms(depth_sd):
    """One RNG block: its size factors, then its uniforms row by row, inverted entry by entry."""
    n_genes, n_groups, seed = 700, 3, 4
    means = group_means(n_genes, n_groups, 0.2, seed, log_mean=0.0)  # means up to ~1000
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM, 1, 1]))
    size = rng.lognormal(mean=0.0, sigma=depth_sd, size=_BLOCK_ROWS)
    uniforms = rng.random((_BLOCK_ROWS, n_genes))
    rows = np.arange(_BLOCK_ROWS, 2 * _BLOCK_ROWS)
    expected = nb_quantile(means[rows % n_groups] * size[:, None], uniforms)
    block = simulate_block(_BLOCK_ROWS, _BLOCK_ROWS, means, seed, depth_sd)
    assert block.dtype == np.float32 and block.has_sorted_indices
    assert (block.data > 0).all()
    np.testing.assert_array_equal(block.toarray(), expected)


# -- Cell Ranger .h5 output --------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [300, 5000], ids=["300-rows", "one-chunk"])
def test_h5_output_equals_the_zarr_simulation(tmp_path, chunk_size):
    args = (1100, 150, 3)
    write_simulated(tmp_path / "sim.zarr", *args, seed=5, de_prob=0.3)
    write_simulated(tmp_path / "sim.h5", *args, seed=5, de_prob=0.3, chunk_size=chunk_size)
    ingest(tmp_path / "sim.h5", tmp_path / "from_h5.zarr")
    expected, got = open_counts(tmp_path / "sim.zarr"), open_counts(tmp_path / "from_h5.zarr")
    np.testing.assert_array_equal(got.X.compute().toarray(), expected.X.compute().toarray())
    assert got.obs_names.equals(expected.obs_names)
    assert got.var_names.equals(expected.var_names)
    groups = group_labels(*args[::2]).astype(str)
    assert expected.obs["group"].tolist() == groups.tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from_h5.zarr", "sim.h5", "sim.zarr"]


def test_simulate_command_writes_h5(tmp_path):
    out = tmp_path / "sim.h5"
    argv = ["simulate", "-o", str(out), "--cells", "300", "--genes", "50", "--groups", "3"]
    assert main([*argv, "--quiet"]) == 0
    with h5py.File(out, "r") as file:
        matrix = file["matrix"]
        assert list(matrix["shape"][:]) == [50, 300]
        assert matrix["barcodes"][0] == b"cell0"
        counts = sp.csr_matrix(
            tuple(matrix[k][:] for k in ("data", "indices", "indptr")), shape=(300, 50)
        )
    np.testing.assert_array_equal(counts.toarray(), simulate(300, 50, 3).X.toarray())
    deep = tmp_path / "deep.zarr"
    assert (
        main(
            [
                "simulate",
                "-o",
                str(deep),
                "--cells",
                "300",
                "--genes",
                "50",
                "--groups",
                "1",
                "--depth-sd",
                "0.7",
                "--quiet",
            ]
        )
        == 0
    )
    expected = simulate(300, 50, 1, depth_sd=0.7).X.toarray()
    np.testing.assert_array_equal(open_counts(deep).X.compute().toarray(), expected)


# -- batches -------------------------------------------------------------------------------


def test_without_batches_nothing_changes():
    plain = simulate(1500, 300, 3, seed=2, log_mean=-1.0)
    layout = simulate(1500, 300, 3, seed=2, log_mean=-1.0, batches=1, batch_depth=[1.0])
    np.testing.assert_array_equal(plain.X.toarray(), layout.X.toarray())
    assert "batch" not in plain.obs


def test_batches_shift_some_genes_scale_depth_and_hold_their_groups():
    composition = [[1, 1, 0], [1, 3, 1]]  # group 2 absent from batch 0; batch 1 unequal
    data = simulate(
        6000,
        2000,
        3,
        seed=4,
        log_mean=-2.0,
        batches=2,
        batch_effect=0.2,
        batch_depth=[1.0, 2.0],
        composition=composition,
    )
    group = data.obs["group"].astype(int).to_numpy()
    batch = data.obs["batch"].astype(int).to_numpy()
    assert (batch == np.arange(6000) % 2).all()
    table = pd.crosstab(batch, group).to_numpy()
    assert table[0, 2] == 0
    np.testing.assert_allclose(
        table / table.sum(axis=1, keepdims=True), [[0.5, 0.5, 0], [0.2, 0.6, 0.2]], atol=0.01
    )
    totals = np.asarray(data.X.sum(axis=1)).ravel()
    same_group = group == 0
    ratio = np.median(totals[same_group & (batch == 1)]) / np.median(
        totals[same_group & (batch == 0)]
    )
    assert 1.5 < ratio < 2.7  # twice the depth, and each batch's own fold changes
    # Group 0's mean in each batch: about a fifth of the genes differ by more than 1.5x.
    means = [np.asarray(data.X[same_group & (batch == b)].mean(axis=0)).ravel() for b in (0, 1)]
    expressed = (means[0] > 1) & (means[1] > 1)
    fold = (means[1] / 2.0) / means[0]
    changed = (np.abs(np.log(fold[expressed])) > np.log(1.5)).mean()
    assert 0.2 < changed < 0.45  # either batch's 20% (their union), less the small changes


def test_batched_stream_equals_the_in_memory_simulation(tmp_path):
    kwargs = {"seed": 6, "batches": 3, "batch_depth": [1, 1.5, 0.7], "log_mean": -2.0}
    write_simulated(tmp_path / "sim.zarr", 2100, 200, 2, chunk_size=700, **kwargs)
    stored = open_counts(tmp_path / "sim.zarr")
    expected = simulate(2100, 200, 2, **kwargs)
    np.testing.assert_array_equal(stored.X.compute().toarray(), expected.X.toarray())
    assert stored.obs["batch"].tolist() == expected.obs["batch"].tolist()


def test_bad_batch_designs_are_input_errors():
    with pytest.raises(InputError, match="--batch-depth needs one positive factor per batch"):
        simulate(10, 10, 1, batches=2, batch_depth=[1.0])
    with pytest.raises(InputError, match="every batch must hold some group"):
        simulate(10, 10, 2, batches=2, composition=[[1, 1], [0, 0]])
    with pytest.raises(InputError, match="--batch-effect must be in"):
        simulate(10, 10, 1, batches=2, batch_effect=2.0)
    assert (
        main(
            [
                "simulate",
                "-o",
                "x.zarr",
                "--cells",
                "9",
                "--genes",
                "9",
                "--groups",
                "2",
                "--batches",
                "2",
                "--absent",
                "5:0",
            ]
        )
        == 2
    )
