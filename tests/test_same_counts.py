"""Same counts, same answer: every form the counts can come in gives the canonical run's result.

Property-based: random small count matrices, with empty cells, empty genes and many ties, are
handed to recall in the forms users hold them in: CSR with unsorted indices, duplicate entries
that add up to the counts, stored zeros; CSC, dense and dask arrays; integer and float dtypes;
.h5ad, .zarr, Matrix Market and Cell Ranger .h5 files, and a Zarr store clustered in place;
any chunk size. Each must give the labels, embedding, ``uns`` record and markers of the same
counts as canonical CSR, for both methods and every null.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import dask
import dask.array as da
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import recall_dask
from recall_dask import config, io
from recall_dask.api import recall_store
from recall_dask.nulls import NULL_METHODS
from recall_dask.params import RecallParams
from recall_dask.preprocess import column_moments, select_variable_genes
from recall_dask.progress import reporting

#: Both methods, and recall with every null.
METHODS = [("recall", null) for null in NULL_METHODS] + [("countsplit", "zip")]
#: Options for a few dozen cells: fewer variable genes, neighbors and PCs than the defaults.
SMALL = {"n_hvg": 16, "k_neighbors": 8, "n_pcs": 8, "dims": 5, "seed": 3}
#: Each example is two runs of the pipeline, so a few examples per method keep the suite fast.
END_TO_END = settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

STRUCTURES = ("unsorted", "duplicates", "zeros")
DTYPES = (np.int32, np.int64, np.float32, np.float64)
CONTAINERS = ("csr", "csc", "dense", "dask-csr", "dask-dense")
FILES = ("h5ad", "zarr", "mtx", "h5", "in-place zarr")


@st.composite
def count_matrices(draw) -> np.ndarray:
    """Dense integer counts of 24-64 cells x 24-48 genes in 1-3 groups, with a few empty cells
    and genes; Poisson counts of small means, so most values tie."""
    n_cells, n_genes = draw(st.integers(24, 64)), draw(st.integers(24, 48))
    n_groups = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    means = 0.3 + rng.gamma(0.6, 2.0, size=(n_groups, n_genes))
    counts = rng.poisson(means[rng.integers(n_groups, size=n_cells)])
    counts[rng.choice(n_cells, draw(st.integers(0, 3)), replace=False)] = 0
    counts[:, rng.choice(n_genes, draw(st.integers(0, 3)), replace=False)] = 0
    return counts


@st.composite
def stored_forms(draw, counts: np.ndarray) -> sp.csr_matrix:
    """The same counts as a CSR matrix whose stored entries are messed up in some of the ways
    :data:`STRUCTURES` names (always at least one); its values are still the counts."""
    kinds = draw(st.sets(st.sampled_from(STRUCTURES), min_size=1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, cols = np.nonzero(counts)
    values = counts[rows, cols].astype(np.int64)
    if "duplicates" in kinds:  # split some entries into two that add up to the count
        split = rng.random(values.size) < 0.5
        first = rng.integers(0, values[split] + 1)
        rows = np.concatenate([rows, rows[split]])
        cols = np.concatenate([cols, cols[split]])
        values = np.concatenate([values, values[split] - first])
        values[np.flatnonzero(split)] = first
    if "zeros" in kinds:
        n_zeros = int(rng.integers(1, counts.size // 4 + 2))
        rows = np.concatenate([rows, rng.integers(counts.shape[0], size=n_zeros)])
        cols = np.concatenate([cols, rng.integers(counts.shape[1], size=n_zeros)])
        values = np.concatenate([values, np.zeros(n_zeros, dtype=np.int64)])
    within_row = rng.random(rows.size) if "unsorted" in kinds else cols
    order = np.lexsort((within_row, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=counts.shape[0]))])
    stored = sp.csr_matrix((values[order], cols[order], indptr), shape=counts.shape)
    return stored


@st.composite
def in_memory_forms(draw, counts: np.ndarray):
    """The counts as a user may hold them in ``adata.X``: any container and dtype, any mess."""
    container = draw(st.sampled_from(CONTAINERS))
    dtype = draw(st.sampled_from(DTYPES))
    stored = draw(stored_forms(counts))
    stored = sp.csr_matrix((stored.data.astype(dtype), stored.indices, stored.indptr), counts.shape)
    rows = draw(st.integers(1, counts.shape[0]))
    if container == "csr":
        return stored
    if container == "csc":
        return stored.tocsc()  # keeps duplicates and stored zeros
    if container == "dense":
        return counts.astype(dtype)
    if container == "dask-csr":
        return da.from_array(stored, chunks=(rows, -1), asarray=False)
    cols = draw(st.integers(1, counts.shape[1]))
    return da.from_array(counts.astype(dtype), chunks=(rows, cols))


def annotated(x, n_cells: int, n_genes: int) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's note on integer X
        return ad.AnnData(
            X=x,
            obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]),
            var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
        )


def canonical(counts: np.ndarray) -> ad.AnnData:
    return annotated(sp.csr_matrix(counts.astype(np.float32)), *counts.shape)


def run(data, method: tuple[str, str], **options) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "accepted after a single iteration", loess notes
        return recall_dask.recall(
            data, method=method[0], null_method=method[1], progress=False, **SMALL, **options
        )


def _record(uns: dict) -> dict:
    """``uns['recall']`` without what may differ between equal runs (times, versions)."""
    return {k: v for k, v in uns["recall"].items() if k not in ("stage_seconds", "versions")}


def assert_same_record(got, want, where: str = "uns['recall']") -> None:
    """Equal nested records; a store's round trip may turn lists into arrays and back."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            assert_same_record(got[key], want[key], f"{where}[{key!r}]")
    else:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=where)


def assert_same_result(got: ad.AnnData, want: ad.AnnData) -> None:
    for key in ("recall", "recall_initial"):
        np.testing.assert_array_equal(got.obs[key].astype(int), want.obs[key].astype(int), key)
    np.testing.assert_allclose(
        got.obsm["X_recall_pca"], want.obsm["X_recall_pca"], rtol=0, atol=1e-10
    )
    assert_same_record(_record(got.uns), _record(want.uns))


def write_file(kind: str, stored: sp.csr_matrix, folder: Path) -> Path:
    """``stored`` (cells x genes) as an input file of ``kind``, its entries kept as they are:
    unsorted, duplicated and zero entries reach the reader."""
    n_cells, n_genes = stored.shape
    adata = annotated(stored, n_cells, n_genes)
    if kind == "h5ad":
        adata.write_h5ad(folder / "counts.h5ad")
        return folder / "counts.h5ad"
    if kind in ("zarr", "in-place zarr"):
        adata.write_zarr(folder / "counts.zarr")
        return folder / "counts.zarr"
    if kind == "mtx":  # genes x cells, one line per stored entry, duplicates add up
        coo = stored.tocoo()
        lines = [
            "%%MatrixMarket matrix coordinate integer general",
            f"{n_genes} {n_cells} {coo.nnz}",
            *(f"{j + 1} {i + 1} {v:g}" for i, j, v in zip(coo.row, coo.col, coo.data, strict=True)),
        ]
        (folder / "mtx").mkdir()
        (folder / "mtx" / "matrix.mtx").write_text("\n".join(lines) + "\n")
        genes = "".join(f"ID{j}\tgene{j}\tGene Expression\n" for j in range(n_genes))
        (folder / "mtx" / "features.tsv").write_text(genes)
        (folder / "mtx" / "barcodes.tsv").write_text("".join(f"cell{i}\n" for i in range(n_cells)))
        return folder / "mtx"
    with h5py.File(folder / "counts.h5", "w") as file:  # Cell Ranger: CSC genes x cells
        group = file.create_group("matrix")
        group["data"] = stored.data.astype(np.int32)
        group["indices"], group["indptr"] = stored.indices, stored.indptr
        group["shape"] = np.array([n_genes, n_cells], dtype=np.int32)
        group["barcodes"] = np.array([f"cell{i}" for i in range(n_cells)], dtype="S")
        features = group.create_group("features")
        features["id"] = np.array([f"ID{j}" for j in range(n_genes)], dtype="S")
        features["name"] = np.array([f"gene{j}" for j in range(n_genes)], dtype="S")
        features["feature_type"] = np.array(["Gene Expression"] * n_genes, dtype="S")
    return folder / "counts.h5"


def run_file(kind: str, path: Path, method: tuple[str, str]) -> ad.AnnData:
    if kind != "in-place zarr":
        return run(path, method)
    params = RecallParams(method=method[0], null_method=method[1], **SMALL)
    with warnings.catch_warnings(), reporting(False):
        warnings.simplefilter("ignore")
        recall_store(path, params, chunk_size=config.get("chunk-size"))
    return io.read_results(path)


# -- end to end: labels, embedding, uns and markers --------------------------------------


@pytest.mark.parametrize("method", METHODS, ids="-".join)
@END_TO_END
@given(data=st.data())
def test_every_in_memory_form_gives_the_canonical_result(method, data):
    counts = data.draw(count_matrices())
    x = data.draw(in_memory_forms(counts))
    before = copy.deepcopy(x) if not isinstance(x, da.Array) else None
    got = run(annotated(x, *counts.shape), method)
    assert_same_result(got, run(canonical(counts), method))
    if before is not None:  # the user's matrix is not changed
        if sp.issparse(x):
            for part in ("data", "indices", "indptr"):
                np.testing.assert_array_equal(getattr(x, part), getattr(before, part))
        else:
            np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("method", METHODS, ids="-".join)
@END_TO_END
@given(data=st.data())
def test_every_file_format_gives_the_in_memory_result(method, data):
    counts = data.draw(count_matrices())
    kind = data.draw(st.sampled_from(FILES))
    stored = data.draw(stored_forms(counts))
    with tempfile.TemporaryDirectory() as folder:
        got = run_file(kind, write_file(kind, stored, Path(folder)), method)
    assert_same_result(got, run(canonical(counts), method))


@pytest.mark.parametrize("method", METHODS, ids="-".join)
@END_TO_END
@given(data=st.data())
def test_chunk_size_does_not_change_the_result(method, data):
    counts = data.draw(count_matrices())
    chunk_size = data.draw(st.integers(1, counts.shape[0]))
    got = run(canonical(counts), method, chunk_size=chunk_size)
    assert_same_result(got, run(canonical(counts), method))


# -- the edge: what the stages receive ---------------------------------------------------


def assert_canonical_blocks(x: da.Array, counts: np.ndarray) -> None:
    """Every block is float32 CSR with sorted, unique indices and no stored zeros, and the
    blocks hold exactly the counts."""
    blocks = dask.compute(*x.to_delayed().ravel(), scheduler="sync")
    for block in blocks:
        assert isinstance(block, sp.csr_matrix) and block.dtype == np.float32
        assert block.has_canonical_format and np.all(block.data != 0)
    whole = sp.vstack(blocks, format="csr")
    want = sp.csr_matrix(counts.astype(np.float32))
    for part in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(whole, part), getattr(want, part))


@FAST
@given(data=st.data())
def test_anndata_counts_reach_the_stages_canonical(data):
    counts = data.draw(count_matrices())
    x = data.draw(in_memory_forms(counts))
    chunk_size = data.draw(st.integers(1, counts.shape[0]))
    blocks = io.counts_from_anndata(annotated(x, *counts.shape), chunk_size=chunk_size)
    assert_canonical_blocks(blocks, counts)


@FAST
@given(data=st.data())
def test_stores_hold_and_yield_canonical_counts(data):
    counts = data.draw(count_matrices())
    kind = data.draw(st.sampled_from(FILES))
    chunk_size = data.draw(st.integers(1, counts.shape[0]))
    with tempfile.TemporaryDirectory() as folder:
        path = write_file(kind, data.draw(stored_forms(counts)), Path(folder))
        if kind != "in-place zarr":  # ingest writes canonical counts ...
            io.ingest(path, Path(folder) / "out.zarr", chunk_size=chunk_size)
            path = Path(folder) / "out.zarr"
        # ... and a store clustered in place is made canonical block by block as it is read
        assert_canonical_blocks(io.open_counts(path, chunk_size=chunk_size).X, counts)


@FAST
@given(data=st.data())
def test_permuted_genes_select_the_same_variable_genes(data):
    """Many sparse genes share one vst score, so the cut at ``n_top`` often falls inside a tie:
    the choice among tied genes must follow the genes, not their position."""
    counts = data.draw(count_matrices())
    n_top = data.draw(st.integers(2, counts.shape[1] // 2))
    permutation = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).permutation(
        counts.shape[1]
    )
    chosen = []
    for columns in (np.arange(counts.shape[1]), permutation):
        adata = canonical(counts[:, columns])
        adata.var_names = np.asarray([f"gene{j}" for j in columns])
        x = io.counts_from_anndata(adata)
        (moments,) = dask.compute(column_moments(x))
        genes = select_variable_genes(x, adata.var, n_top, moments)
        chosen.append(set(adata.var_names[genes]))
    assert chosen[0] == chosen[1]


def test_pbmc3k_with_unsorted_indices_gives_the_canonical_labels(pbmc3k_run):
    """PBMC 3k in memory with each cell's entries stored in reverse column order, a valid CSR
    that once moved values into other columns during the PCA (8 clusters became 6); run with
    the fixture's options (R's null)."""
    store, _ = pbmc3k_run
    want = io.read_results(store)
    x = io.open_counts(store).X.compute()
    row = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    reverse = x.indptr[row] + x.indptr[row + 1] - 1 - np.arange(x.nnz)
    unsorted = sp.csr_matrix((x.data[reverse], x.indices[reverse], x.indptr), shape=x.shape)
    assert not unsorted.has_sorted_indices and abs(unsorted - x).max() == 0
    adata = ad.AnnData(X=unsorted, obs=want.obs[[]], var=want.var)
    got = recall_dask.recall(adata, null_method="zip", depth="none", progress=False)
    for key in ("recall", "recall_initial"):
        np.testing.assert_array_equal(got.obs[key], want.obs[key])
    np.testing.assert_allclose(
        got.obsm["X_recall_pca"], want.obsm["X_recall_pca"], rtol=0, atol=1e-10
    )
