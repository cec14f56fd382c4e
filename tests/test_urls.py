"""Stores and work directories named by URLs: file://, an in-memory object store, and a real
S3 protocol server (moto) read by the workers of a local cluster."""

from __future__ import annotations

import json
import pickle
import socket

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from conftest import as_row_chunked

from recall_dask.api import recall
from recall_dask.cli import main
from recall_dask.errors import InputError
from recall_dask.io import ingest, open_counts
from recall_dask.io.storage import Location
from recall_dask.io.workstore import work_store, write_tiles
from recall_dask.simulate import simulate, write_simulated

#: Three groups that recall separates (as in test_pipeline's one- and two-worker test).
SIM = {"n_cells": 600, "n_genes": 800, "n_groups": 3, "de_prob": 0.15, "seed": 5, "log_mean": -1}
RUN = {"seed": 3, "n_hvg": 300}
CHUNK = 150


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A simulated AnnData store on local disk, and the labels of a plain-path run on it."""
    tmp = tmp_path_factory.mktemp("plain")
    write_simulated(tmp / "sim.zarr", **SIM, chunk_size=CHUNK)
    adata = recall(tmp / "sim.zarr", out=tmp / "out.zarr", work_dir=tmp, **RUN)
    labels = adata.obs["recall"].to_numpy()
    assert len(set(labels)) == 3
    return tmp / "sim.zarr", labels


def test_file_urls_for_input_output_and_work_dir(simulated, tmp_path):
    source, expected = simulated
    store, work = (tmp_path / "in.zarr").as_uri(), (tmp_path / "work").as_uri()
    (tmp_path / "work").mkdir()
    ingest(source.as_uri(), store, chunk_size=CHUNK)
    adata = recall(store, out=(tmp_path / "out.zarr").as_uri(), work_dir=work, **RUN)
    np.testing.assert_array_equal(adata.obs["recall"].to_numpy(), expected)
    stored = open_counts(tmp_path / "out.zarr")
    np.testing.assert_array_equal(stored.obs["recall"].to_numpy(), expected)
    assert list((tmp_path / "work").iterdir()) == [], "the work store is removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "out.zarr", "work"]


def test_counts_tasks_hold_the_url_not_data(simulated):
    """A task of the lazy X names the store and key; it holds no array and no open store."""
    source, _ = simulated
    x = open_counts(source.as_uri()).X
    graph = dict(x.__dask_graph__())
    assert len(graph) == x.numblocks[0]
    payload = pickle.dumps(graph)
    assert str(source).encode() in payload and len(payload) < 10_000
    assert b"zarr" not in payload.replace(b"sim.zarr", b"")


# -- an object store without directories or renames: fsspec's memory filesystem -----------


@pytest.fixture
def memory():
    """A fresh prefix in fsspec's in-process memory filesystem; removed afterwards."""
    root = Location.of("memory://recall-test")
    root.remove()
    yield root.url
    root.remove()


def test_store_in_an_object_store_round_trips(simulated, memory):
    source, _ = simulated
    ingest(source, f"{memory}/counts.zarr", chunk_size=100)
    x = open_counts(f"{memory}/counts.zarr").X
    assert x.chunks[0] == (100,) * 6
    np.testing.assert_array_equal(x.compute().toarray(), open_counts(source).X.compute().toarray())


def test_anndata_result_written_to_an_object_store(simulated, memory):
    _, expected = simulated
    adata = simulate(**SIM)
    recall(adata, out=f"{memory}/adata.zarr", chunk_size=CHUNK, work_dir=memory, **RUN)
    stored = ad.read_zarr(Location.of(f"{memory}/adata.zarr").zarr_store(read_only=True))
    np.testing.assert_array_equal(stored.obs["recall"].to_numpy(), expected)
    names = [p.rsplit("/", 1)[1] for p in Location.of(memory).fs.ls(memory, detail=False)]
    assert names == ["adata.zarr"], "the work store is removed"


def test_failed_write_to_an_object_store_leaves_nothing(tmp_path, memory):
    bad = tmp_path / "bad.zarr"
    write_simulated(bad, 50, 20, 2, seed=1)
    x = zarr.open_group(bad, mode="r+")["X/data"]
    x[3] = -1
    with pytest.raises(InputError, match="negative"):
        ingest(bad, f"{memory}/out.zarr", chunk_size=10)
    assert not Location.of(f"{memory}/out.zarr").exists()


def test_work_store_under_a_url_is_removed_even_on_failure(rng, memory):
    matrix = sp.random(90, 30, density=0.2, format="csr", random_state=rng)
    with pytest.raises(RuntimeError), work_store(memory) as directory:
        assert directory.startswith(f"{memory}/recall-work-")
        store = f"{directory}/tiles.zarr"
        tiles = write_tiles(as_row_chunked(matrix, 37), store, 8)
        assert (tiles.by_feature_blocks().compute() != matrix).nnz == 0
        assert Location.of(store).isdir()
        raise RuntimeError("worker lost")
    assert not Location.of(directory).exists()


def test_non_zarr_inputs_from_a_url_are_refused(memory):
    Location.of(memory).fs.pipe(f"{memory}/m.h5", b"\x89HDF\r\n")
    with pytest.raises(InputError, match="only AnnData .zarr stores are read from URLs"):
        ingest(f"{memory}/m.h5", f"{memory}/out.zarr")


# -- a real S3 protocol server: moto, read by the processes of a local cluster -------------


@pytest.fixture(scope="module")
def s3():
    """Storage options for a bucket on a local moto S3 server, with dummy credentials."""
    pytest.importorskip("s3fs", reason="the s3:// test needs s3fs (pip install '.[test]')")
    server_module = pytest.importorskip(
        "moto.server", reason="the s3:// test needs moto[server] (pip install '.[test]')"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
        }.items():
            env.setenv(name, value)  # the workers of a local cluster inherit these
        env.delenv("AWS_PROFILE", raising=False)
        options = {"endpoint_url": f"http://127.0.0.1:{port}"}
        Location.of("s3://recall", options).fs.mkdir("recall")
        yield options
    server.stop()


def test_s3_input_output_and_work_dir_on_a_local_cluster(simulated, s3):
    """simulate -> run, all on S3, with two worker processes that read their own chunks."""
    _, expected = simulated
    options = ["--storage-options", json.dumps(s3)]
    write_simulated("s3://recall/sim.zarr", **SIM, chunk_size=CHUNK, storage_options=s3)
    run = ["run", "s3://recall/sim.zarr", "-o", "s3://recall/out.zarr"]
    run += ["--work-dir", "s3://recall/work", "--seed", "3", "--n-hvg", "300"]
    run += ["--chunk-size", str(CHUNK), "--n-workers", "2", "--threads-per-worker", "1"]
    assert main([*run, *options, "--quiet"]) == 0
    stored = open_counts("s3://recall/out.zarr", storage_options=s3)
    np.testing.assert_array_equal(stored.obs["recall"].to_numpy(), expected)
    root = Location.of("s3://recall/out.zarr", s3).open_group("r")
    assert root["obsm/X_recall_pca"].shape == (SIM["n_cells"], 50) and "recall" in root["uns"]
    assert not Location.of("s3://recall/work", s3).exists(), "the work store is removed"
    fs = Location.of("s3://recall", s3).fs
    fs.invalidate_cache()
    assert sorted(fs.ls("recall")) == ["recall/out.zarr", "recall/sim.zarr"]


def test_cli_simulate_and_ingest_write_to_s3(s3, tmp_path):
    options = ["--storage-options", json.dumps(s3), "--quiet"]
    sizes = ["--cells", "60", "--genes", "40", "--groups", "2"]
    simulate = ["simulate", "-o", "s3://recall/cli/sim.zarr", *sizes, "--chunk-size", "25"]
    assert main([*simulate, *options]) == 0
    local = str(tmp_path / "sim.h5")
    assert main(["simulate", "-o", local, *sizes]) == 0
    assert main(["ingest", local, "-o", "s3://recall/cli/in.zarr", *options]) == 0
    a = open_counts("s3://recall/cli/sim.zarr", storage_options=s3)
    b = open_counts("s3://recall/cli/in.zarr", storage_options=s3)
    assert a.X.chunks[0] == (25, 25, 10)
    np.testing.assert_array_equal(a.X.compute().toarray(), b.X.compute().toarray())
    Location.of("s3://recall/cli", s3).remove()


def test_failed_run_leaves_no_output_on_s3(s3):
    write_simulated("s3://recall/tiny.zarr", 15, 40, 1, storage_options=s3)
    with pytest.raises(InputError, match="fewer cells"):
        recall("s3://recall/tiny.zarr", out="s3://recall/bad.zarr", storage_options=s3, n_hvg=20)
    assert not Location.of("s3://recall/bad.zarr", s3).exists()
    Location.of("s3://recall/tiny.zarr", s3).remove()


def test_unwritable_urls_are_input_errors(simulated, s3):
    source, _ = simulated
    with pytest.raises(InputError, match="cannot write s3://missing-bucket/out.zarr"):
        ingest(source, "s3://missing-bucket/out.zarr", storage_options=s3)
    with pytest.raises(InputError, match="cannot write the work store s3://missing-bucket/tmp"):
        recall(
            source,
            out="s3://recall/w.zarr",
            work_dir="s3://missing-bucket/tmp",
            storage_options=s3,
            **RUN,
        )
    assert not Location.of("s3://recall/w.zarr", s3).exists(), "the output is removed"
    assert not Location.of("s3://missing-bucket", s3).exists(), "no bucket is created"
