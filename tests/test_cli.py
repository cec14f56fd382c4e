"""The command line: help, bad input as one clear line with exit 2, and the PBMC 3k run."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from recall_dask.cli import main
from recall_dask.io import BUNDLED_PBMC3K


def cellranger_folder(path: Path, counts: np.ndarray) -> Path:
    """A Cell Ranger v3 folder holding ``counts`` (cells x genes)."""
    path.mkdir()
    n_cells, n_genes = counts.shape
    with gzip.open(path / "matrix.mtx.gz", "wb") as handle:
        scipy.io.mmwrite(handle, sp.coo_matrix(counts.T))
    genes = "".join(f"ENSG{j}\tG{j}\tGene Expression\n" for j in range(n_genes))
    barcodes = "".join(f"CELL{i}-1\n" for i in range(n_cells))
    (path / "features.tsv.gz").write_bytes(gzip.compress(genes.encode()))
    (path / "barcodes.tsv.gz").write_bytes(gzip.compress(barcodes.encode()))
    return path


def tree_digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def counts(rng, n_cells=60, n_genes=40) -> np.ndarray:
    return rng.poisson(1.0, size=(n_cells, n_genes)).astype(float)


def bad_inputs(tmp: Path, rng) -> dict[str, tuple[Path, list[str]]]:
    """Each case: the input path and extra options."""
    good = counts(rng)
    negative, fractional, nan, inf = (good.copy() for _ in range(4))
    negative[3, 4] = -1
    fractional[5, 6] = 0.5
    nan[1, 1] = np.nan
    inf[2, 2] = np.inf
    corrupt = tmp / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\nthis is not really hdf5")
    truncated = cellranger_folder(tmp / "truncated", good)
    data = (truncated / "matrix.mtx.gz").read_bytes()
    (truncated / "matrix.mtx.gz").write_bytes(data[: len(data) // 2])
    unknown = tmp / "counts.xlsx"
    unknown.write_text("not a matrix")
    return {
        "missing path": (tmp / "nope", []),
        "unknown format": (unknown, []),
        "corrupt h5": (corrupt, []),
        "truncated mtx": (truncated, []),
        "negative": (cellranger_folder(tmp / "neg", negative), []),
        "non-integer": (cellranger_folder(tmp / "frac", fractional), []),
        "nan": (cellranger_folder(tmp / "nan", nan), []),
        "inf": (cellranger_folder(tmp / "inf", inf), []),
        "empty": (cellranger_folder(tmp / "empty", np.zeros((0, 5))), []),
        "no genes detected": (cellranger_folder(tmp / "zeros", np.zeros((30, 5))), []),
        "fewer cells than neighbors": (cellranger_folder(tmp / "tiny", good[:12]), []),
        "fdr out of range": (cellranger_folder(tmp / "ok1", good), ["--fdr", "1.5"]),
        "unknown algorithm": (cellranger_folder(tmp / "ok2", good), ["--algorithm", "x"]),
        "unknown null": (cellranger_folder(tmp / "ok3", good), ["--null-method", "beta"]),
        "unknown method": (cellranger_folder(tmp / "ok11", good), ["--method", "split"]),
        "unknown neighbor search": (
            cellranger_folder(tmp / "ok12", good),
            ["--neighbors", "hnsw"],
        ),
        "no draws": (cellranger_folder(tmp / "ok13", good), ["--draws", "0"]),
        "negative draws": (cellranger_folder(tmp / "ok14", good), ["--draws", "-2"]),
        "fractional draws": (cellranger_folder(tmp / "ok15", good), ["--draws", "2.5"]),
        "agreement zero": (cellranger_folder(tmp / "ok16", good), ["--agreement", "0"]),
        "agreement above one": (cellranger_folder(tmp / "ok17", good), ["--agreement", "1.5"]),
        "bad resolution": (cellranger_folder(tmp / "ok4", good), ["--resolution-start", "-1"]),
        "no workers": (cellranger_folder(tmp / "ok5", good), ["--n-workers", "0"]),
        "bad chunk size": (cellranger_folder(tmp / "ok6", good), ["--chunk-size", "0"]),
        "missing work dir": (cellranger_folder(tmp / "ok7", good), ["--work-dir", str(tmp / "no")]),
        "dims above n-pcs": (cellranger_folder(tmp / "ok8", good), ["--n-pcs", "5"]),
        "one neighbor": (cellranger_folder(tmp / "ok9", good), ["--k-neighbors", "1"]),
        "prune everything": (cellranger_folder(tmp / "ok10", good), ["--snn-prune", "1"]),
    }


CASES = [
    "missing path",
    "unknown format",
    "corrupt h5",
    "truncated mtx",
    "negative",
    "non-integer",
    "nan",
    "inf",
    "empty",
    "no genes detected",
    "fewer cells than neighbors",
    "fdr out of range",
    "unknown algorithm",
    "unknown null",
    "unknown method",
    "unknown neighbor search",
    "no draws",
    "negative draws",
    "fractional draws",
    "agreement zero",
    "agreement above one",
    "bad resolution",
    "no workers",
    "bad chunk size",
    "missing work dir",
    "dims above n-pcs",
    "one neighbor",
    "prune everything",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_nothing_left(case, tmp_path, rng, capsys):
    (tmp_path / "in").mkdir()
    source, options = bad_inputs(tmp_path / "in", rng)[case]
    before = tree_digest(source) if source.exists() else None
    out = tmp_path / "out.zarr"
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(["run", str(source), "-o", str(out), "--quiet", *options]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "error" in err[0] and "Traceback" not in err[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".out.zarr*")), "no partial output either"
    if before is not None:
        assert tree_digest(source) == before, "the input must never be modified"


def test_entry_point_reports_without_traceback(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    result = subprocess.run(
        [sys.executable, "-m", "recall_dask", "run", str(bad), "-o", str(tmp_path / "o.zarr")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


HELP_MENTIONS = {
    "": ("run", "demo", "report", "ingest", "simulate"),
    "run": (
        "--method",
        "countsplit",
        "--seed",
        "--fdr",
        "--n-pcs",
        "--k-neighbors",
        "--snn-prune",
        "--in-place",
        "--scheduler",
        "--labels-csv",
        "--report",
        "--compare-default",
        "--batch-key",
        "--batch-test",
        "--batches",
        "barcode-suffix",
    ),
    "demo": ("--method", "countsplit", "--seed", "--fdr", "--scheduler", "--no-report"),
    "report": ("--out", "--compare-default", "--scheduler", "recall-dask[report]"),
    "ingest": ("--chunk-size", "--layer"),
    "simulate": ("--cells", "--genes", "--groups", "--de-prob", "--batches", "--absent"),
}


@pytest.mark.parametrize("command", HELP_MENTIONS)
def test_help_for_every_command(command):
    result = subprocess.run(
        [sys.executable, "-m", "recall_dask", *command.split(), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "usage: recall-dask" in result.stdout
    for option in HELP_MENTIONS[command]:
        assert option in result.stdout


def test_ingest_command_writes_a_row_chunked_store(tmp_path):
    from recall_dask.io import open_counts

    out = tmp_path / "pbmc.zarr"
    assert main(["ingest", str(BUNDLED_PBMC3K), "-o", str(out), "--chunk-size", "1000"]) == 0
    adata = open_counts(out)
    assert adata.shape == (2700, 13714)
    assert adata.X.chunks[0] == (1000, 1000, 700)


def test_simulate_command_and_its_errors(tmp_path, capsys):
    from recall_dask.io import open_counts

    out = tmp_path / "sim.zarr"
    assert (
        main(["simulate", "-o", str(out), "--cells", "300", "--genes", "50", "--groups", "3"]) == 0
    )
    assert open_counts(out).obs["group"].nunique() == 3
    capsys.readouterr()
    assert (
        main(
            [
                "simulate",
                "-o",
                str(tmp_path / "bad.zarr"),
                "--cells",
                "-5",
                "--genes",
                "5",
                "--groups",
                "1",
            ]
        )
        == 2
    )
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "bad.zarr").exists()


def test_graph_options_reach_the_run(tmp_path):
    import anndata as ad

    source, out = tmp_path / "sim.zarr", tmp_path / "out.zarr"
    # About 700 UMIs per cell, and pruning that keeps the graph whole: with k = 8, pruning at
    # 0.2 leaves a few cells in a component of their own, which no resolution joins to the
    # others, and the loop gives up (as R's).
    sizes = ["--cells", "400", "--genes", "300", "--groups", "2", "--log-mean", "-2"]
    main(["simulate", "-o", str(source), *sizes])
    options = ["--n-pcs", "12", "--k-neighbors", "8", "--snn-prune", "0.1", "--n-hvg", "100"]
    options += ["--neighbors", "exact"]
    assert main(["run", str(source), "-o", str(out), "--quiet", "--n-workers", "1", *options]) == 0
    adata = ad.read_zarr(out)
    assert adata.obsm["X_recall_pca"].shape == (400, 12)
    params = adata.uns["recall"]["params"]
    assert (params["n_pcs"], params["k_neighbors"], params["snn_prune"]) == (12, 8, 0.1)
    assert params["neighbors"] == "exact"


def test_in_place_run_writes_results_into_the_input_store(tmp_path, capsys):
    import anndata as ad

    source, copy = tmp_path / "sim.zarr", tmp_path / "copy.zarr"
    main(["simulate", "-o", str(source), "--cells", "400", "--genes", "300", "--groups", "2"])
    counts_before = tree_digest(source / "X")
    options = ["--quiet", "--n-workers", "1", "--n-hvg", "100", "--chunk-size", "150"]
    assert main(["run", str(source), "-o", str(copy), *options]) == 0
    assert main(["run", str(source), "--in-place", *options]) == 0
    assert tree_digest(source / "X") == counts_before
    in_place, copied = ad.read_zarr(source), ad.read_zarr(copy)
    np.testing.assert_array_equal(in_place.obs["recall"], copied.obs["recall"])
    # Same embedding up to float rounding (threaded BLAS may sum in another order).
    np.testing.assert_allclose(
        in_place.obsm["X_recall_pca"], copied.obsm["X_recall_pca"], atol=1e-10
    )
    assert in_place.uns["recall"]["n_iterations"] == copied.uns["recall"]["n_iterations"]
    capsys.readouterr()
    both = ["--in-place", "-o", str(tmp_path / "x.zarr")]
    for wrong in (both, [], ["--in-place", "--layer", "c"]):
        with pytest.raises(SystemExit) as exit_info:
            sys.exit(main(["run", str(source), "--quiet", *wrong]))
        assert exit_info.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_pbmc3k_labels_csv_in_input_order(pbmc3k_run):
    _, labels_csv = pbmc3k_run
    assert labels_csv.read_text().splitlines()[0] == "barcode,cluster"
    labels = pd.read_csv(labels_csv)
    barcodes = gzip.decompress((BUNDLED_PBMC3K / "barcodes.tsv.gz").read_bytes()).decode().split()
    assert labels["barcode"].tolist() == barcodes


def test_pbmc3k_store_holds_results(pbmc3k_run):
    import anndata as ad

    out, labels_csv = pbmc3k_run
    adata = ad.read_zarr(out)
    assert adata.shape == (2700, 13714)
    assert {"recall", "recall_initial"} <= set(adata.obs.columns)
    assert adata.obsm["X_recall_pca"].shape == (2700, 50)
    record = adata.uns["recall"]
    assert record["params"]["resolution_start"] == 0.8 and record["params"]["n_hvg"] == 2000
    first = record["iterations"]["0"]
    assert first["resolution"] == 0.8
    assert adata.obs["recall_initial"].nunique() == first["n_clusters"]
    labels = pd.read_csv(labels_csv)
    np.testing.assert_array_equal(labels["cluster"], adata.obs["recall"].astype(int))


def r_by_seed() -> pd.DataFrame:
    """R's procedure on PBMC 3k: plain clustering, and the calibrated clusters of each seed."""
    return pd.read_csv(BUNDLED_PBMC3K / "r_recall_by_seed.csv", index_col="barcode")


def test_pbmc3k_cluster_count_is_inside_rs_range_over_seeds(pbmc3k_run):
    labels = pd.read_csv(pbmc3k_run[1], index_col="barcode")["cluster"]
    reference = r_by_seed()
    counts = [reference[c].nunique() for c in reference if c.startswith("recall_seed")]
    assert len(counts) >= 5
    assert min(counts) <= labels.nunique() <= max(counts)


def test_pbmc3k_agrees_with_the_tutorial_annotation_as_r_does(pbmc3k_run):
    """R's runs score 0.57-0.62 against the Seurat tutorial's cell types."""
    from sklearn.metrics import adjusted_rand_score

    labels = pd.read_csv(pbmc3k_run[1], index_col="barcode")["cluster"]
    tutorial = pd.read_csv(BUNDLED_PBMC3K / "labels.csv", index_col="barcode")["label"].dropna()
    assert adjusted_rand_score(tutorial, labels.loc[tutorial.index]) >= 0.55


def test_pbmc3k_plain_clustering_is_seurats(pbmc3k_run):
    """Without artificial genes, our stages are Seurat's tutorial clustering: R's
    ``default_cluster`` (11 clusters at resolution 0.8)."""
    from sklearn.metrics import adjusted_rand_score

    from recall_dask.io import open_counts, read_results
    from recall_dask.params import RecallParams
    from recall_dask.report import default_clusters

    store = pbmc3k_run[0]
    counts = open_counts(store)
    variable_genes = read_results(store).uns["recall"]["variable_genes"]
    labels = default_clusters(counts.X, counts.var, variable_genes, RecallParams())
    assert adjusted_rand_score(r_by_seed()["default_cluster"], labels) >= 0.9
