"""Batches (``--batch-key``): variable genes chosen across batches, a null fitted within each
batch, Harmony before the graph, what the run records, and bad batch input as one line."""

from __future__ import annotations

import gzip
import sys

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score
from test_cli import cellranger_folder, tree_digest

import recall_dask
from recall_dask.choices import NULL_METHODS
from recall_dask.cli import main
from recall_dask.dask_cluster import ClusterConfig, dask_client
from recall_dask.io.batches import Batches
from recall_dask.nulls import fit_null
from recall_dask.preprocess.hvg import select_variable_genes
from recall_dask.preprocess.scale import batch_moments
from recall_dask.progress import compute
from recall_dask.simulate import simulate

#: Dense enough that 300 of 600 genes carry the groups; fewer variable genes than genes, so
#: each cell's depth comes from the others.
SIZE = {"n_genes": 600, "log_mean": -1.0}
OPTIONS = {"n_hvg": 300, "progress": False}


def _population(seed: int, n_cells: int = 600) -> ad.AnnData:
    """One population over 3 batches, batch fold changes on 10% of genes, one batch at 1.5x
    depth (the issue's case)."""
    return simulate(n_cells, SIZE["n_genes"], 1, seed=seed, log_mean=SIZE["log_mean"],
                    batches=3, batch_depth=[1.0, 1.5, 1.0])  # fmt: skip


def _clusters(data: ad.AnnData, **options) -> pd.Series:
    return recall_dask.recall(data.copy(), **OPTIONS, **options).obs["recall"]


@pytest.mark.parametrize("seed", [0, 1])
def test_one_population_over_batches_is_one_cluster(seed):
    data = _population(seed)
    assert _clusters(data, batch_key="batch", seed=seed).nunique() == 1
    assert _clusters(data, seed=seed).nunique() > 1, "blind to batches, the batches split"


def test_types_over_batches_with_one_type_in_one_batch_only():
    """Four types over three batches of unequal composition; type 3 lives in batch 0 only
    and must stay its own cluster, not be pulled by Harmony into a neighbour."""
    composition = np.array([[1, 1, 1, 1], [2, 1, 1, 0], [1, 3, 1, 0]], dtype=float)
    data = simulate(1200, SIZE["n_genes"], 4, seed=3, log_mean=SIZE["log_mean"], batches=3,
                    batch_depth=[1.0, 1.3, 0.8], composition=composition)  # fmt: skip
    assert set(data.obs.loc[data.obs["group"] == "3", "batch"]) == {"0"}
    labels = _clusters(data, batch_key="batch", seed=1)
    assert labels.nunique() == 4
    assert adjusted_rand_score(data.obs["group"], labels) >= 0.95
    only = labels[data.obs["group"] == "3"]
    assert (labels[only.index] == only.mode()[0]).all()
    assert (labels == only.mode()[0]).sum() == len(only), "its cluster holds it alone"


def test_run_records_each_cells_batch_the_corrected_pcs_and_the_mixing():
    data = _population(0, n_cells=300)
    result = recall_dask.recall(data.copy(), batch_key="batch", **OPTIONS)
    assert (result.obs["recall_batch"].astype(str) == data.obs["batch"].astype(str)).all()
    pcs, corrected = result.obsm["X_recall_pca"], result.obsm["X_recall_harmony"]
    assert corrected.shape == pcs.shape and not np.allclose(corrected, pcs)
    record = result.uns["recall"]["batches"]
    assert record["key"] == "batch" and list(record["names"]) == ["0", "1", "2"]
    composition = record["composition"]
    labels = result.obs["recall"].astype(int).to_numpy()
    assert composition.shape == (labels.max() + 1, 3) and composition.sum() == result.n_obs
    assert (composition.sum(axis=0) == np.bincount(data.obs["batch"].cat.codes)).all()
    assert ((record["mixing"] > 0.9) & (record["mixing"] <= 1.0 + 1e-12)).all()
    assert "Harmony" in list(result.uns["recall"]["stage_seconds"]["stage"])


def test_mixing_is_zero_for_a_cluster_of_one_batch():
    from recall_dask.run import batch_record

    codes = np.array([0, 1, 0, 1, 0, 0])
    record = batch_record(np.array([0, 0, 0, 0, 1, 1]), Batches("b", np.array(["x", "y"]), codes))
    np.testing.assert_array_equal(record["composition"], [[2, 2], [2, 0]])
    np.testing.assert_allclose(record["mixing"], [np.log(2) / _entropy_of(4, 2), 0.0])


def _entropy_of(*counts: int) -> float:
    share = np.array(counts) / sum(counts)
    return float(-(share * np.log(share)).sum())


def test_same_labels_for_one_and_two_workers_and_any_chunking():
    data = _population(1, n_cells=400)
    expected = _clusters(data, batch_key="batch", seed=2, chunk_size=400)
    assert _clusters(data, batch_key="batch", seed=2, chunk_size=67).equals(expected)
    for n_workers in (1, 2):
        with dask_client(ClusterConfig(n_workers=n_workers, threads_per_worker=1)):
            got = _clusters(data, batch_key="batch", seed=2, chunk_size=123)
        assert got.equals(expected)


@pytest.mark.parametrize("method", NULL_METHODS)
def test_streaming_per_batch_fits_equal_in_memory_per_batch_fits(method):
    """Each batch's marginal from the pass over row chunks, grouped by batch, is the fit of
    that batch's cells alone, held in memory (R's null, without depth); with depth, the pass
    over chunks gives the fit of one in-memory block."""
    data = simulate(300, 40, 2, seed=5, log_mean=-0.5, batches=3, batch_depth=[1, 2, 0.5])
    x = data.X.tocsr()
    codes = data.obs["batch"].cat.codes.to_numpy().astype(np.int64)
    chunked = da.from_array(x, chunks=(37, -1), asarray=False)
    whole = da.from_array(x, chunks=(-1, -1), asarray=False)
    streamed = fit_null(chunked, method, seed=1, batches=codes)
    for b in range(3):
        alone = da.from_array(x[codes == b], chunks=(-1, -1), asarray=False)
        _assert_same_marginal(streamed.marginals[b], fit_null(alone, method, seed=1).marginal)
    factors = np.asarray(x.sum(axis=1)).ravel()
    factors = factors / factors.mean()
    streamed = fit_null(chunked, method, seed=1, size_factors=factors, batches=codes)
    in_memory = fit_null(whole, method, seed=1, size_factors=factors, batches=codes)
    for got, want in zip(streamed.marginals, in_memory.marginals, strict=True):
        _assert_same_marginal(got, want)


def _assert_same_marginal(got, want) -> None:
    for name, value in vars(want).items():
        np.testing.assert_allclose(getattr(got, name), value, rtol=1e-10, atol=0, err_msg=name)


def test_variable_genes_across_batches_are_scanpys_seurat_v3_paper():
    """Counts deep enough that no two genes tie in score: ties, which we break by name,
    scanpy breaks in its sort's order."""
    sc = pytest.importorskip("scanpy")
    data = simulate(900, 600, 3, seed=3, batches=3, log_mean=0.5, batch_depth=[1, 1.5, 0.7])
    codes = data.obs["batch"].cat.codes.to_numpy().astype(np.int64)
    counts = da.from_array(data.X.tocsr(), chunks=(200, -1), asarray=False)
    (moments,) = compute(batch_moments(counts, codes, 3))
    ours = select_variable_genes(counts, data.var[[]], 200, None, batches=(codes, moments))
    theirs = sc.pp.highly_variable_genes(
        data, n_top_genes=200, flavor="seurat_v3_paper", batch_key="batch", inplace=False
    )
    np.testing.assert_array_equal(ours, np.flatnonzero(theirs["highly_variable"]))


def test_a_single_batch_is_a_warning_and_the_run_without_batches(caplog):
    data = _population(0, n_cells=300)
    data.obs["batch"] = "only"
    with caplog.at_level("WARNING", logger="recall_dask"):
        result = recall_dask.recall(data.copy(), batch_key="batch", **OPTIONS)
    assert "single batch" in caplog.text
    assert "batches" not in result.uns["recall"] and "X_recall_harmony" not in result.obsm
    assert result.obs["recall"].equals(_clusters(data))


@pytest.mark.parametrize("options", [{"batch_test": "within"}, {"method": "countsplit"},
                                     {"draws": 3}], ids=str)  # fmt: skip
def test_every_path_conditions_on_the_batches(options):
    data = _population(2, n_cells=450)
    assert _clusters(data, batch_key="batch", seed=1, **options).nunique() == 1


# -- where batches come from, and bad batch input -------------------------------------------


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(args))
    return exit_info.value.code


def test_cellranger_batches_from_a_csv_or_the_barcode_suffix(tmp_path, capsys):
    data = _population(0, n_cells=240)
    folder = cellranger_folder(tmp_path / "aggr", data.X.toarray())
    suffixed = [f"CELL{i}-{b + 1}" for i, b in enumerate(data.obs["batch"].cat.codes)]
    (folder / "barcodes.tsv.gz").write_bytes(
        gzip.compress("".join(f"{b}\n" for b in suffixed).encode())
    )
    out = tmp_path / "suffix.zarr"
    assert _cli(["run", str(folder), "-o", str(out), "--quiet", "--n-hvg", "300",
                 "--batches", "barcode-suffix"]) == 0  # fmt: skip
    stored = ad.read_zarr(out)
    assert list(stored.obs["recall_batch"].cat.categories) == ["1", "2", "3"]
    assert stored.uns["recall"]["batches"]["key"] == "batch"
    csv = tmp_path / "batches.csv"
    pd.DataFrame({"barcode": suffixed, "batch": [f"lane{s[-1]}" for s in suffixed]}).to_csv(
        csv, index=False
    )
    out = tmp_path / "csv.zarr"
    assert _cli(["run", str(folder), "-o", str(out), "--quiet", "--n-hvg", "300",
                 "--batches", str(csv), "--batch-key", "lane"]) == 0  # fmt: skip
    stored_csv = ad.read_zarr(out)
    assert stored_csv.uns["recall"]["batches"]["key"] == "lane"
    assert stored_csv.obs["recall"].equals(stored.obs["recall"]), "same batches, same labels"
    capsys.readouterr()


def _bad_batch_inputs(tmp_path) -> dict[str, tuple[str, list[str]]]:
    data = _population(0, n_cells=120)
    h5ad = tmp_path / "in.h5ad"
    data.write_h5ad(h5ad)
    labels = data.obs["batch"].to_numpy(dtype=object)
    for name, changed in (("nan", {7: np.nan}), ("tiny", dict.fromkeys(range(5), "tiny"))):
        edited = labels.copy()
        edited[list(changed)] = list(changed.values())
        ad.AnnData(data.X, obs=pd.DataFrame({"batch": edited}, index=data.obs_names)).write_h5ad(
            tmp_path / f"{name}.h5ad"
        )
    folder = cellranger_folder(tmp_path / "cr", data.X.toarray())
    cells = [f"CELL{i}-1" for i in range(data.n_obs)]
    short = tmp_path / "short.csv"
    pd.DataFrame({"barcode": cells[:-3], "batch": "a"}).to_csv(short, index=False)
    unknown = tmp_path / "unknown.csv"
    pd.DataFrame({"barcode": [*cells, "GHOST-1"], "batch": "a"}).to_csv(unknown, index=False)
    return {
        "unknown column": (h5ad, ["--batch-key", "donor"]),
        "missing batch values": (tmp_path / "nan.h5ad", ["--batch-key", "batch"]),
        "batch smaller than k": (tmp_path / "tiny.h5ad", ["--batch-key", "batch"]),
        "csv misses cells": (folder, ["--batches", str(short)]),
        "csv names unknown barcodes": (folder, ["--batches", str(unknown)]),
        "no barcode suffix": (tmp_path / "in.h5ad", ["--batches", "barcode-suffix"]),
    }


BAD = [
    "unknown column",
    "missing batch values",
    "batch smaller than k",
    "csv misses cells",
    "csv names unknown barcodes",
    "no barcode suffix",
]
EXPECTED = {
    "unknown column": "not a column of obs",
    "missing batch values": "have no batch",
    "batch smaller than k": "fewer cells than --k-neighbors",
    "csv misses cells": "3 cells have no batch",
    "csv names unknown barcodes": "not cells of the input",
    "no barcode suffix": "has no -N suffix",
}


@pytest.mark.parametrize("case", BAD)
def test_bad_batches_are_one_line_exit_2_nothing_written(case, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    source, options = _bad_batch_inputs(tmp_path / "in")[case]
    before = tree_digest(source)
    out = tmp_path / "out.zarr"
    assert _cli(["run", str(source), "-o", str(out), "--quiet", *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and EXPECTED[case] in err[0], err
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))
    assert tree_digest(source) == before


def test_unknown_column_in_memory_is_an_error():
    with pytest.raises(recall_dask.errors.InputError, match="not a column of obs"):
        recall_dask.recall(_population(0, n_cells=120), batch_key="donor", **OPTIONS)
