"""Long runs survive interruption: one writer per output, a full disk and a damaged input store
each end in one line, and leave no partial output behind."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr
from sklearn.metrics import adjusted_rand_score
from test_cli import tree_digest

import recall_dask.api
from recall_dask.api import recall
from recall_dask.cli import main
from recall_dask.errors import InputError, OutOfSpaceError
from recall_dask.io import ingest, open_counts, read_results, write_stream
from recall_dask.io.lock import lock_beside, output_lock
from recall_dask.io.space import out_of_space
from recall_dask.io.storage import Location
from recall_dask.simulate import group_labels, write_simulated

#: Three groups that recall separates (as in test_urls), and the run that finds them.
SIM = {"n_cells": 600, "n_genes": 800, "n_groups": 3, "de_prob": 0.15, "seed": 5, "log_mean": -1}
RUN = ["--seed", "3", "--n-hvg", "300", "--quiet"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "sim.zarr"
    write_simulated(path, **SIM, chunk_size=150)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.zarr"
    write_simulated(path, 60, 40, 2, chunk_size=25)
    return path


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(out: Path, pid: int, host: str) -> Path:
    lock = Path(lock_beside(Location.of(out)).path)
    lock.write_text(json.dumps({"pid": pid, "host": host, "started": 0.0}))
    return lock


# One writer per output


def test_second_run_on_the_same_output_exits_2_and_the_first_finishes(
    simulated, tmp_path, monkeypatch, capsys
):
    """The first run is held, lock taken, just before it clusters; the second starts then."""
    out = tmp_path / "out.zarr"
    holding, release = threading.Event(), threading.Event()
    recall_store = recall_dask.api.recall_store

    def held(*args, **kwargs):
        holding.set()
        assert release.wait(600)
        return recall_store(*args, **kwargs)

    monkeypatch.setattr(recall_dask.api, "recall_store", held)
    first: dict = {}

    def run_first() -> None:
        try:
            first["adata"] = recall(simulated, out=out, work_dir=tmp_path, seed=3, n_hvg=300)
        except BaseException as error:  # reported by the main thread
            first["error"] = error
            holding.set()

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        assert holding.wait(600)
        assert "error" not in first, first.get("error")
        code = main(["run", str(simulated), "-o", str(out), *RUN])
        line = one_error_line(capsys)
    finally:
        release.set()
        thread.join()
    assert code == 2
    assert str(out) in line and "in use by another run" in line
    assert f"pid {os.getpid()} on {socket.gethostname()}" in line
    assert "error" not in first, first.get("error")
    labels = open_counts(out).obs["recall"].to_numpy()
    truth = group_labels(SIM["n_cells"], SIM["n_groups"])
    assert adjusted_rand_score(truth, labels) == 1.0
    assert not lock_beside(Location.of(out)).exists(), "the lock goes with the run"


def test_a_live_lock_stops_a_run_and_removes_nothing(small, tmp_path, capsys):
    out = tmp_path / "out.zarr"
    ingest(small, out)
    before = tree_digest(out)
    codes = []
    with output_lock(out):  # held by this thread, as another run would hold it
        second = threading.Thread(
            target=lambda: codes.append(main(["ingest", str(small), "-o", str(out), "--quiet"]))
        )
        second.start()
        second.join()
    assert codes == [2]
    assert "in use by another run" in one_error_line(capsys)
    assert tree_digest(out) == before


def test_a_stale_lock_is_taken_over_with_a_warning(small, tmp_path, caplog):
    out = tmp_path / "out.zarr"
    lock = write_lock(out, dead_pid(), socket.gethostname())
    with caplog.at_level(logging.WARNING, logger="recall_dask"):
        ingest(small, out)
    assert "took over the stale lock" in caplog.text and str(out) in caplog.text
    assert open_counts(out).shape == (60, 40)
    assert not lock.exists()


@pytest.mark.parametrize("whose", ["live process", "other host"])
def test_a_lock_that_may_be_live_is_kept(small, tmp_path, whose):
    out = tmp_path / "out.zarr"
    pid, host = (os.getppid(), socket.gethostname())
    if whose == "other host":
        pid, host = dead_pid(), "elsewhere.example.org"
    lock = write_lock(out, pid, host)
    with pytest.raises(InputError, match=f"in use by another run \\(pid {pid} on {host}"):
        ingest(small, out)
    assert lock.exists() and not out.exists()


# A full disk


@pytest.fixture
def full_disk(tmp_path):
    """A 20 MB tmpfs with about 200 KB left free."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (disk / "filler").write_bytes(bytes(20 * 2**20 - 200 * 2**10))
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_full_work_dir_is_one_line_naming_it_and_the_bytes_needed(
    simulated, full_disk, tmp_path, capsys
):
    out = tmp_path / "out.zarr"
    before = tree_digest(simulated)
    code = main(["run", str(simulated), "-o", str(out), "--work-dir", str(full_disk), *RUN])
    line = one_error_line(capsys)
    assert code == 2
    assert "no space left" in line and f"the work store {full_disk}/recall-work-" in line
    assert " bytes" in line and "free" in line
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*")), "no partial output"
    (kept,) = (p for p in full_disk.iterdir() if p.name != "filler")
    assert kept.name.startswith("recall-work-"), "the finished stages stay, for --resume"
    assert tree_digest(simulated) == before, "the input is untouched"
    # Space freed: --resume finishes with the labels of a run that never ran out of it.
    subprocess.run(["mount", "-o", "remount,size=200m", str(full_disk)], check=True)
    run = ["run", str(simulated), "-o", str(out), "--work-dir", str(full_disk), *RUN]
    assert main([*run, "--resume"]) == 0
    assert main(["run", str(simulated), "-o", str(tmp_path / "whole.zarr"), *RUN]) == 0
    labels = (read_results(o).obs["recall"] for o in (out, tmp_path / "whole.zarr"))
    np.testing.assert_array_equal(*labels)
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"], "removed once done"


def test_full_output_disk_is_one_line_naming_it(simulated, full_disk, capsys):
    out = full_disk / "out.zarr"
    code = main(["ingest", str(simulated), "-o", str(out), "--quiet"])
    line = one_error_line(capsys)
    assert code == 2
    assert f"no space left on the device of the output {out}" in line
    needed = Location.of(simulated).fs.du(str(simulated))
    assert f"about {needed:,} bytes" in line, "about the input's size"
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"], "no partial output"


def test_full_disk_while_writing_results_removes_the_output(small, tmp_path, monkeypatch):
    """ENOSPC as anndata and dask hand it back: chained behind another error."""

    def full(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as error:
            raise RuntimeError("while writing key 'obs'") from error

    monkeypatch.setattr(recall_dask.io, "write_results", full)
    out = tmp_path / "out.zarr"
    with pytest.raises(OutOfSpaceError, match=f"of the output {out}: it needs about [0-9,]+ bytes"):
        recall(small, out=out, n_hvg=20, k_neighbors=5)
    assert not out.exists() and not list(tmp_path.glob(".out.zarr*"))


def test_out_of_space_is_found_in_chains_and_groups():
    full = OSError(errno.ENOSPC, "No space left on device")
    assert out_of_space(full) and out_of_space(OSError(f"[Errno 28] {full.strerror}"))
    assert out_of_space(ExceptionGroup("tasks", [ValueError("x"), full]))
    wrapped = RuntimeError("task failed")
    wrapped.__cause__ = full
    assert out_of_space(wrapped)
    assert not out_of_space(OSError(errno.EACCES, "Permission denied"))


# Damaged input stores


@pytest.fixture(params=["missing", "garbage"])
def damaged(request, simulated, tmp_path) -> tuple[Path, str]:
    """A copy of the simulated store with one chunk of X deleted or overwritten, and its key."""
    copy = tmp_path / "damaged.zarr"
    shutil.copytree(simulated, copy)
    key = "X/data/0" if request.param == "missing" else "X/indices/0"
    if request.param == "missing":
        (copy / key).unlink()
    else:
        (copy / key).write_bytes(b"this is not a blosc chunk")
    return copy, key


def test_a_damaged_input_chunk_is_one_line_naming_it(damaged, tmp_path, capsys):
    store, key = damaged
    before = tree_digest(store)
    code = main(["run", str(store), "-o", str(tmp_path / "out.zarr"), *RUN])
    assert code == 2
    assert f"{store}/{key}" in one_error_line(capsys)
    assert not (tmp_path / "out.zarr").exists()
    assert tree_digest(store) == before


def test_a_damaged_chunk_is_named_when_read_in_place(damaged):
    store, key = damaged
    with pytest.raises(InputError, match=f"chunk {store}/{key} is"):
        open_counts(store).X.compute(scheduler="sync")


def test_leading_empty_rows_may_leave_indptr_chunks_unwritten(tmp_path):
    """Zarr skips chunks that are all fill value: here the first chunk of an indptr chunked
    by 10 cells, as other writers store it."""
    counts = sp.csr_matrix(np.vstack([np.zeros((30, 4)), np.ones((10, 4))]))
    obs = pd.DataFrame(index=[f"c{i}" for i in range(40)])
    var = pd.DataFrame(index=[f"g{j}" for j in range(4)])
    store = tmp_path / "s.zarr"
    write_stream(store, obs, var, lambda size: iter([counts]), chunk_size=10)
    x = zarr.open_group(store, mode="r+")["X"]
    indptr = x["indptr"][:]
    del x["indptr"]
    x.create_array("indptr", data=indptr, chunks=(10,))
    zarr.consolidate_metadata(store)
    assert not (store / "X/indptr/0").exists()
    assert open_counts(store).X.compute().nnz == 40
