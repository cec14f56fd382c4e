"""Tests for recall_dask.io: every input format against the same tiny matrix, chunk layouts,
the bundled PBMC 3k, bad inputs (error, no output, untouched input) and result writing."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
import warnings
from pathlib import Path

import anndata as ad
import dask.array as da
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
import zarr
from anndata.io import sparse_dataset

from recall_dask.errors import InputError
from recall_dask.io import (
    BUNDLED_PBMC3K,
    counts_from_anndata,
    ingest,
    open_counts,
    write_labels_csv,
    write_results,
)
from recall_dask.io import write_10x_h5 as stream_10x_h5

N_CELLS, N_GENES = 53, 11
SYMBOLS = ["G0", "G1", "G1", "G3", "G1", *(f"G{i}" for i in range(5, N_GENES))]
UNIQUE_SYMBOLS = ["G0", "G1", "G1-1", "G3", "G1-2", *(f"G{i}" for i in range(5, N_GENES))]
IDS = [f"ENSG{i:05d}" for i in range(N_GENES)]
BARCODES = [f"CELL{i:03d}-1" for i in range(N_CELLS)]


def make_counts() -> np.ndarray:
    """Poisson counts with an all-zero cell and an all-zero gene."""
    counts = np.random.default_rng(0).poisson(0.7, size=(N_CELLS, N_GENES)).astype(np.int64)
    counts[5] = 0
    counts[:, 3] = 0
    return counts


# -- fixture writers, one per input format -----------------------------------------------


def _write_gz_or_plain(path: Path, text: str, gz: bool) -> None:
    if gz:
        with gzip.open(f"{path}.gz", "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)


def write_mtx_dir(folder: Path, counts: np.ndarray, *, v3: bool, gz: bool) -> Path:
    folder.mkdir()
    scipy.io.mmwrite(folder / "matrix.mtx", sp.coo_matrix(counts.T))
    if gz:
        with (
            open(folder / "matrix.mtx", "rb") as raw,
            gzip.open(folder / "matrix.mtx.gz", "wb") as out,
        ):
            shutil.copyfileobj(raw, out)
        (folder / "matrix.mtx").unlink()
    columns = [IDS, SYMBOLS, ["Gene Expression"] * N_GENES] if v3 else [IDS, SYMBOLS]
    genes = "".join("\t".join(row) + "\n" for row in zip(*columns, strict=True))
    _write_gz_or_plain(folder / ("features.tsv" if v3 else "genes.tsv"), genes, gz)
    _write_gz_or_plain(
        folder / "barcodes.tsv", "".join(b + "\n" for b in BARCODES[: len(counts)]), gz
    )
    return folder


def write_10x_h5(path: Path, counts: np.ndarray, *, v3: bool) -> Path:
    csc = sp.csc_matrix(counts.T)  # genes x cells, compressed by cell
    with h5py.File(path, "w") as file:
        group = file.create_group("matrix" if v3 else "GRCh38")
        for name in ("data", "indices", "indptr"):
            group[name] = getattr(csc, name)
        group["shape"] = np.array(csc.shape, dtype=np.int32)
        group["barcodes"] = np.array(BARCODES[: len(counts)], dtype="S")
        if v3:
            group["features/id"] = np.array(IDS, dtype="S")
            group["features/name"] = np.array(SYMBOLS, dtype="S")
            group["features/feature_type"] = np.array(["Gene Expression"] * N_GENES, dtype="S")
        else:
            group["genes"] = np.array(IDS, dtype="S")
            group["gene_names"] = np.array(SYMBOLS, dtype="S")
    return path


def annotated(matrix, *, layer: str | None = None) -> ad.AnnData:
    """AnnData with counts in X or in ``layer``, extra obs/var columns and unique var names."""
    n_obs = matrix.shape[0]
    obs = pd.DataFrame({"batch": ["a", "b"] * (n_obs // 2) + ["a"] * (n_obs % 2)}, BARCODES[:n_obs])
    var = pd.DataFrame({"highly_variable": np.arange(N_GENES) % 2 == 0}, UNIQUE_SYMBOLS)
    if layer is None:
        return ad.AnnData(X=matrix, obs=obs, var=var)
    return ad.AnnData(
        X=np.zeros(matrix.shape, np.float32), obs=obs, var=var, layers={layer: matrix}
    )


def write_h5ad(path: Path, matrix, *, layer: str | None = None) -> Path:
    annotated(matrix, layer=layer).write_h5ad(path)
    return path


def write_zarr(path: Path, matrix, *, zarr_format: int = 3) -> Path:
    with ad.settings.override(zarr_write_format=zarr_format), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's notes on zarr v2/v3 defaults
        annotated(matrix).write_zarr(path)
    return path


# id -> (writer of the source under tmp_path, layer to ingest)
FORMATS = {
    "mtx-v2": (lambda tmp, c: write_mtx_dir(tmp / "v2", c, v3=False, gz=False), None),
    "mtx-v3": (lambda tmp, c: write_mtx_dir(tmp / "v3", c, v3=True, gz=False), None),
    "mtx-v3-gz": (lambda tmp, c: write_mtx_dir(tmp / "v3gz", c, v3=True, gz=True), None),
    "h5-v3": (lambda tmp, c: write_10x_h5(tmp / "m.h5", c, v3=True), None),
    "h5-v2": (lambda tmp, c: write_10x_h5(tmp / "m.h5", c, v3=False), None),
    "h5ad-dense": (lambda tmp, c: write_h5ad(tmp / "a.h5ad", c.astype(np.float32)), None),
    "h5ad-csr": (lambda tmp, c: write_h5ad(tmp / "a.h5ad", sp.csr_matrix(c)), None),
    "h5ad-csc": (lambda tmp, c: write_h5ad(tmp / "a.h5ad", sp.csc_matrix(c)), None),
    "h5ad-layer": (
        lambda tmp, c: write_h5ad(tmp / "a.h5ad", sp.csr_matrix(c), layer="counts"),
        "counts",
    ),
    "zarr-v2-dense": (lambda tmp, c: write_zarr(tmp / "a.zarr", c, zarr_format=2), None),
    "zarr-v3-csr": (lambda tmp, c: write_zarr(tmp / "a.zarr", sp.csr_matrix(c)), None),
}


@pytest.fixture(params=list(FORMATS), ids=list(FORMATS))
def source(request, tmp_path):
    write, layer = FORMATS[request.param]
    return write(tmp_path, make_counts()), layer


def test_every_format_round_trips(source, tmp_path):
    path, layer = source
    store = tmp_path / "out.zarr"
    ingest(path, store, chunk_size=10, layer=layer)
    adata = ad.read_zarr(store)
    assert isinstance(adata.X, sp.csr_matrix) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), make_counts())
    assert list(adata.obs_names) == BARCODES
    assert list(adata.var_names) == UNIQUE_SYMBOLS
    lazy = open_counts(store).X
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute().toarray(), make_counts())


def test_cell_ranger_gene_ids_kept(tmp_path):
    store = tmp_path / "out.zarr"
    ingest(write_10x_h5(tmp_path / "m.h5", make_counts(), v3=True), store)
    var = ad.read_zarr(store).var
    assert list(var["gene_ids"]) == IDS
    assert set(var["feature_types"]) == {"Gene Expression"}


def test_input_annotations_survive(tmp_path):
    store = tmp_path / "out.zarr"
    ingest(write_h5ad(tmp_path / "a.h5ad", sp.csr_matrix(make_counts())), store)
    adata = ad.read_zarr(store)
    np.testing.assert_array_equal(adata.var["highly_variable"], np.arange(N_GENES) % 2 == 0)
    assert list(adata.obs["batch"][:3]) == ["a", "b", "a"]


@pytest.mark.parametrize("chunk_size", [1, 37, 10_000], ids=["1-row", "uneven", "one-chunk"])
def test_chunk_sizes_give_same_matrix_chunked_by_rows(tmp_path, chunk_size):
    store = tmp_path / "out.zarr"
    ingest(write_10x_h5(tmp_path / "m.h5", make_counts(), v3=True), store, chunk_size=chunk_size)
    x = open_counts(store).X
    expected_rows = tuple(np.diff([*range(0, N_CELLS, chunk_size), N_CELLS]))
    assert x.chunks == (expected_rows, (N_GENES,))
    blocks = [x.blocks[i].compute() for i in range(x.numblocks[0])]
    assert all(isinstance(b, sp.csr_matrix) and b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(sp.vstack(blocks).toarray(), make_counts())


def test_open_counts_rechunks_and_pickles(tmp_path):
    store = tmp_path / "out.zarr"
    ingest(write_h5ad(tmp_path / "a.h5ad", make_counts()), store, chunk_size=7)
    x = open_counts(store, chunk_size=20).X
    assert x.chunks[0] == (20, 20, 13)
    restored = pickle.loads(pickle.dumps(x))
    np.testing.assert_array_equal(restored.compute().toarray(), make_counts())


def test_bundled_pbmc3k(tmp_path):
    store = tmp_path / "pbmc.zarr"
    ingest(BUNDLED_PBMC3K, store)
    adata = ad.read_zarr(store)
    assert adata.shape == (2700, 13714)
    assert adata.X.nnz == 2_282_976
    assert adata.var_names.is_unique and "gene_ids" in adata.var


def test_existing_store_is_replaced(tmp_path):
    store = tmp_path / "out.zarr"
    ingest(write_10x_h5(tmp_path / "m.h5", make_counts(), v3=True), store)
    ingest(write_h5ad(tmp_path / "a.h5ad", make_counts()[:10]), store)
    assert ad.read_zarr(store).shape == (10, N_GENES)


def test_ingested_store_is_plain_anndata(tmp_path):
    """anndata wrote the store: anndata reads it, X is the input, and scanpy works on it
    (scanpy has no Zarr reader of its own: its users call anndata's)."""
    store = tmp_path / "out.zarr"
    ingest(write_h5ad(tmp_path / "a.h5ad", sp.csr_matrix(make_counts())), store, chunk_size=7)
    adata = ad.read_zarr(store)
    np.testing.assert_array_equal(adata.X.toarray(), make_counts())
    x = sparse_dataset(zarr.open_group(store, mode="r")["X"])
    np.testing.assert_array_equal(x[10:30].toarray(), make_counts()[10:30])
    sc = pytest.importorskip("scanpy", reason="scanpy is not installed")
    sc.pp.calculate_qc_metrics(adata, percent_top=None, inplace=True)
    np.testing.assert_array_equal(adata.obs["total_counts"], make_counts().sum(axis=1))


# -- bad inputs --------------------------------------------------------------------------


def _with(counts: np.ndarray, row: int, value: float) -> np.ndarray:
    counts = counts.astype(np.float64)
    counts[row, 2] = value
    return counts


def _truncated_mtx_gz(tmp: Path) -> Path:
    folder = write_mtx_dir(tmp / "mtx", make_counts(), v3=True, gz=True)
    data = (folder / "matrix.mtx.gz").read_bytes()
    (folder / "matrix.mtx.gz").write_bytes(data[: len(data) // 2])
    return folder


def _bad_header_mtx(tmp: Path) -> Path:
    folder = write_mtx_dir(tmp / "mtx", make_counts(), v3=True, gz=False)
    (folder / "matrix.mtx").write_text("not a matrix market file\n1 2 3\n")
    return folder


def _two_barcodes(tmp: Path) -> Path:
    folder = write_mtx_dir(tmp / "mtx", make_counts(), v3=True, gz=False)
    (folder / "barcodes.tsv").write_text("A\nB\n")
    return folder


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _empty_dir(path: Path) -> Path:
    path.mkdir()
    return path


# id -> (writer of a bad source under tmp_path, expected message fragment)
BAD_INPUTS = {
    "missing": (lambda tmp: tmp / "nope.h5", "no such file"),
    "dir-without-matrix": (lambda tmp: _empty_dir(tmp / "empty"), "neither matrix.mtx"),
    "unknown-extension": (lambda tmp: _file(tmp / "counts.csv", b"a,b\n1,2\n"), "unknown input"),
    "truncated-mtx-gz": (_truncated_mtx_gz, "cannot read"),
    "bad-mtx-header": (_bad_header_mtx, "cannot read"),
    "corrupt-zarr": (
        lambda tmp: _file(_empty_dir(tmp / "a.zarr") / ".zgroup", b"{").parent,
        "cannot read",
    ),
    "corrupt-h5": (lambda tmp: _file(tmp / "m.h5", b"\x89HDF\r\n" + b"junk" * 100), "cannot read"),
    "negative": (
        lambda tmp: write_mtx_dir(tmp / "mtx", _with(make_counts(), 50, -1), v3=True, gz=True),
        "negative values",
    ),
    "non-integer": (
        lambda tmp: write_h5ad(tmp / "a.h5ad", sp.csr_matrix(_with(make_counts(), 50, 0.5))),
        "non-integer values",
    ),
    "nan": (lambda tmp: write_h5ad(tmp / "a.h5ad", _with(make_counts(), 50, np.nan)), "NaN"),
    "inf": (lambda tmp: write_zarr(tmp / "a.zarr", _with(make_counts(), 50, np.inf)), "infinite"),
    "no-cells": (
        lambda tmp: write_h5ad(tmp / "a.h5ad", np.zeros((0, N_GENES), np.float32)),
        "empty matrix",
    ),
    "all-zero": (
        lambda tmp: write_10x_h5(tmp / "m.h5", np.zeros_like(make_counts()), v3=True),
        "no genes detected",
    ),
    "barcode-count-mismatch": (_two_barcodes, "2 barcodes listed"),
    "count-beyond-float32": (
        lambda tmp: write_h5ad(tmp / "a.h5ad", _with(make_counts(), 50, 2**24 + 1)),
        "counts above 16,777,216",
    ),
}


def _snapshot(path: Path) -> dict[str, str]:
    """Hash of every file at or under ``path``, to prove the input was not modified."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_raises_and_leaves_nothing(tmp_path, case):
    write, fragment = BAD_INPUTS[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = write(inputs)
    before = _snapshot(path) if path.exists() else None
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match=fragment) as error:
        ingest(path, out / "store.zarr", chunk_size=7)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert list(out.iterdir()) == []
    assert (_snapshot(path) if path.exists() else None) == before


def test_failed_ingest_keeps_previous_store(tmp_path):
    store = tmp_path / "out.zarr"
    ingest(write_10x_h5(tmp_path / "m.h5", make_counts(), v3=True), store)
    bad = write_h5ad(tmp_path / "bad.h5ad", _with(make_counts(), 0, -3))
    with pytest.raises(InputError, match="negative"):
        ingest(bad, store)
    np.testing.assert_array_equal(ad.read_zarr(store).X.toarray(), make_counts())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5ad", "m.h5", "out.zarr"]


@pytest.mark.parametrize("where", ["same", "inside"])
def test_store_overlapping_source_is_refused(tmp_path, where):
    path = write_zarr(tmp_path / "a.zarr", sp.csr_matrix(make_counts()))
    before = _snapshot(path)
    store = path if where == "same" else path / "out.zarr"
    with pytest.raises(InputError, match="overlaps the input"):
        ingest(tmp_path / "." / "a.zarr", store)
    assert _snapshot(path) == before


def test_layer_is_refused_for_cell_ranger_inputs(tmp_path):
    with pytest.raises(InputError, match="layer="):
        ingest(write_10x_h5(tmp_path / "m.h5", make_counts(), v3=True), tmp_path / "o", layer="x")


def test_missing_layer(tmp_path):
    path = write_h5ad(tmp_path / "a.h5ad", make_counts())
    with pytest.raises(InputError, match="no layers/counts matrix"):
        ingest(path, tmp_path / "o.zarr", layer="counts")
    assert not (tmp_path / "o.zarr").exists()


# -- counts_from_anndata -----------------------------------------------------------------

IN_MEMORY = {
    "dense": lambda c: annotated(c),
    "csr": lambda c: annotated(sp.csr_matrix(c)),
    "csc": lambda c: annotated(sp.csc_matrix(c)),
    "dask": lambda c: annotated(da.from_array(c, chunks=(20, 4))),
}


@pytest.mark.parametrize("kind", list(IN_MEMORY), ids=list(IN_MEMORY))
def test_counts_from_anndata(kind):
    x = counts_from_anndata(IN_MEMORY[kind](make_counts()), chunk_size=37)
    assert x.chunks == ((37, N_CELLS - 37), (N_GENES,))
    block = x.blocks[0].compute()
    assert isinstance(block, sp.csr_matrix) and block.dtype == np.float32
    np.testing.assert_array_equal(x.compute().toarray(), make_counts())


def test_counts_from_anndata_layer():
    adata = annotated(sp.csr_matrix(make_counts()), layer="counts")
    x = counts_from_anndata(adata, layer="counts")
    np.testing.assert_array_equal(x.compute().toarray(), make_counts())
    with pytest.raises(InputError, match="missing"):
        counts_from_anndata(adata, layer="raw_counts")


@pytest.mark.parametrize(
    ("matrix", "fragment"),
    [
        (_with(make_counts(), 40, -1), "negative values"),
        (sp.csr_matrix(_with(make_counts(), 40, 2.5)), "non-integer values"),
        (sp.csc_matrix(_with(make_counts(), 40, np.nan)), "NaN"),
        (_with(make_counts(), 40, -np.inf), "infinite"),
        (np.zeros((N_CELLS, N_GENES)), "no genes detected"),
        (np.zeros((0, N_GENES)), "empty matrix"),
        (_with(make_counts(), 40, 2**24 + 1).astype(np.int64), "float32 cannot hold"),
    ],
    ids=["negative", "non-integer", "nan", "inf", "all-zero", "no-cells", "beyond-float32"],
)
def test_counts_from_anndata_validates(matrix, fragment):
    with pytest.raises(InputError, match=fragment):
        counts_from_anndata(annotated(matrix), chunk_size=16)


# -- Cell Ranger .h5 writer --------------------------------------------------------------


def _row_chunks(counts: np.ndarray):
    """Row chunks as the writer receives them: CSR with an explicit zero, and dense floats."""

    def rows(size: int):
        for start in range(0, len(counts), size):
            block = counts[start : start + size]
            if start // size % 2:
                yield block.astype(np.float64)
            else:
                csr = sp.csr_matrix(block)
                csr.data[:1] = 0  # stored zero: dropped from the file
                yield csr

    return rows


def _zero_first_stored(counts: np.ndarray, size: int) -> np.ndarray:
    """``counts`` as ``_row_chunks`` yields it: the first stored count of even chunks zeroed."""
    out = counts.copy()
    for start in range(0, len(counts), 2 * size):
        rows, cols = np.nonzero(out[start : start + size])
        if rows.size:
            out[start + rows[0], cols[0]] = 0
    return out


def test_write_10x_h5_layout_and_round_trip(tmp_path):
    path = tmp_path / "out.h5"
    obs = pd.DataFrame(index=BARCODES)
    var = pd.DataFrame({"gene_ids": IDS}, index=UNIQUE_SYMBOLS)
    stream_10x_h5(path, obs, var, _row_chunks(make_counts()), chunk_size=7)
    expected = _zero_first_stored(make_counts(), 7)
    with h5py.File(path, "r") as file:
        matrix = file["matrix"]
        dtypes = {k: matrix[k].dtype for k in ("data", "indices", "indptr")}
        assert dtypes == {"data": np.int32, "indices": np.int64, "indptr": np.int64}
        assert list(matrix["shape"][:]) == [N_GENES, N_CELLS]
        csc = sp.csc_matrix(
            tuple(matrix[k][:] for k in ("data", "indices", "indptr")), shape=(N_GENES, N_CELLS)
        )
        assert csc.has_sorted_indices and (csc.data > 0).all()
        np.testing.assert_array_equal(csc.toarray(), expected.T)
        assert matrix["barcodes"][:].tolist() == [b.encode() for b in BARCODES]
        features = {k: matrix[f"features/{k}"][:].tolist() for k in matrix["features"]}
    assert features == {
        "_all_tag_keys": [b"genome"],
        "id": [i.encode() for i in IDS],
        "name": [n.encode() for n in UNIQUE_SYMBOLS],
        "feature_type": [b"Gene Expression"] * N_GENES,
        "genome": [b""] * N_GENES,
    }
    ingest(path, tmp_path / "out.zarr", chunk_size=10)
    adata = ad.read_zarr(tmp_path / "out.zarr")
    np.testing.assert_array_equal(adata.X.toarray(), expected)
    assert list(adata.obs_names) == BARCODES
    assert list(adata.var_names) == UNIQUE_SYMBOLS
    assert list(adata.var["gene_ids"]) == IDS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5", "out.zarr"]


def _row_slices(counts: np.ndarray, size: int):
    for start in range(0, len(counts), size):
        yield sp.csr_matrix(counts[start : start + size])


@pytest.mark.parametrize(
    ("counts", "n_barcodes", "fragment"),
    [
        (_with(make_counts(), 20, -1), N_CELLS, "cells 14-20.*negative values"),
        (_with(make_counts(), 3, 0.5), N_CELLS, "non-integer"),
        (make_counts(), N_CELLS - 1, "53 cells in the matrix, 52 barcodes"),
        (np.zeros((N_CELLS, N_GENES)), N_CELLS, "no genes detected"),
    ],
    ids=["negative", "non-integer", "barcode-count", "all-zero"],
)
def test_write_10x_h5_failure_keeps_previous_file(tmp_path, counts, n_barcodes, fragment):
    path = tmp_path / "out.h5"
    var = pd.DataFrame(index=UNIQUE_SYMBOLS)
    stream_10x_h5(path, pd.DataFrame(index=BARCODES), var, _row_chunks(make_counts()))
    before = _snapshot(path)
    obs = pd.DataFrame(index=BARCODES[:n_barcodes])
    with pytest.raises(InputError, match=fragment) as error:
        stream_10x_h5(path, obs, var, lambda size: _row_slices(counts, size), chunk_size=7)
    assert str(path) in str(error.value)
    assert _snapshot(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


# -- results -----------------------------------------------------------------------------


def test_write_results_round_trip(tmp_path):
    store = tmp_path / "out.zarr"
    ingest(write_10x_h5(tmp_path / "m.h5", make_counts(), v3=True), store)
    obs = pd.DataFrame({"cluster": pd.Categorical(np.arange(N_CELLS) % 3)}, index=BARCODES)
    embedding = np.random.default_rng(1).normal(size=(N_CELLS, 4))
    iterations = [{"resolution": 0.8, "n_clusters": 5}, {"resolution": 0.4, "w": np.arange(3)}]
    uns = {"recall": {"iterations": iterations, "genes": ["G0", "G1"], "seed": 7}}
    write_results(store, obs=obs, obsm={"X_pca": embedding}, uns=uns)
    write_results(store, obs=obs, obsm={"X_pca": embedding * 2}, uns={"done": True})
    adata = ad.read_zarr(store)
    pd.testing.assert_frame_equal(adata.obs, obs)
    np.testing.assert_allclose(adata.obsm["X_pca"], embedding * 2)
    recall = adata.uns["recall"]
    assert recall["iterations"]["0"] == {"resolution": 0.8, "n_clusters": 5}
    np.testing.assert_array_equal(recall["iterations"]["1"]["w"], np.arange(3))
    assert list(recall["genes"]) == ["G0", "G1"] and recall["seed"] == 7
    assert adata.uns["done"]
    np.testing.assert_array_equal(adata.X.toarray(), make_counts())


def test_write_results_rejects_other_cells(tmp_path):
    store = tmp_path / "out.zarr"
    ingest(write_10x_h5(tmp_path / "m.h5", make_counts(), v3=True), store)
    with pytest.raises(InputError, match="obs index"):
        write_results(store, obs=pd.DataFrame(index=BARCODES[::-1]), obsm={}, uns={})


def test_write_labels_csv(tmp_path):
    path = tmp_path / "labels.csv"
    write_labels_csv(path, ["AAA-1", "CCC-1", "GGG-1"], [2, 0, 2])
    assert path.read_text() == "barcode,cluster\nAAA-1,2\nCCC-1,0\nGGG-1,2\n"
