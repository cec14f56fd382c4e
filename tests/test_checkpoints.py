"""Checkpoints and ``--resume`` (issue 17): a run killed at a stage boundary and resumed gives
the uninterrupted run's results, and a resumed run never mixes two runs.

The kills are SIGKILLs of the command line's process group, fired by the test hook
``RECALL_DASK_TEST_KILL_AT`` at a stage boundary (not by a timer), so each test is
deterministic.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from recall_dask._testhook import KILL_AT
from recall_dask.cli import main
from recall_dask.errors import InputError
from recall_dask.io.checkpoints import checkpoint_store, work_store_name
from recall_dask.io.fingerprint import run_fingerprint
from recall_dask.io.storage import Location
from recall_dask.params import RecallParams
from recall_dask.simulate import write_simulated

#: Eight resolutions to three clusters, in well under a minute on a quiet machine.
OPTIONS = ["--n-hvg", "100", "--resolution-start", "2", "--chunk-size", "128"]
CLUSTER = ["--n-workers", "1", "--threads-per-worker", "1"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "sim.h5"
    write_simulated(path, 500, 300, 4, log_mean=-1.5, seed=0)
    return path


@pytest.fixture(scope="module")
def uninterrupted(simulated, tmp_path_factory) -> ad.AnnData:
    out = tmp_path_factory.mktemp("uninterrupted") / "out.zarr"
    assert main(["run", str(simulated), "-o", str(out), "--quiet", *OPTIONS, *CLUSTER]) == 0
    return ad.read_zarr(out)


def run_killed(simulated: Path, out: Path, work: Path, point: str) -> None:
    """The command line, killed by the test hook at ``point``."""
    command = [sys.executable, "-m", "recall_dask", "run", str(simulated), "-o", str(out)]
    command += ["--work-dir", str(work), *OPTIONS, *CLUSTER]
    process = subprocess.Popen(
        command,
        env={**os.environ, KILL_AT: point},
        start_new_session=True,  # its own process group, which the hook kills
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = process.communicate(timeout=1800)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL, err


def assert_same(a: object, b: object, where: str = "uns") -> None:
    """Equal values, arrays and nested dicts, exactly."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)


#: Kill point -> the stages the resumed run must take from the work store, and one it must not.
KILLS = {
    "during the write of the augmented matrix": (
        "work-store-chunk:2",
        ["counts", "genes"],
        "augmented.zarr",
    ),
    "after the embedding": (
        "embedding",
        ["counts", "genes", "augmented.zarr", "embedding-0"],
        "graph-0",
    ),
    # With one worker thread the loop clusters one resolution ahead: the first two clusterings
    # are submitted together, the third once the first resolution's pairs are tested.
    "during a clustering task on a worker, at the second resolution": (
        "clustering:3",
        ["counts", "genes", "augmented.zarr", "embedding-0", "graph-0", "iteration-0-0"],
        "iteration-1-0",
    ),
    "in calibration, at the second resolution": (
        "iteration-0",
        ["counts", "genes", "augmented.zarr", "embedding-0", "graph-0", "iteration-0-0"],
        "iteration-1-0",
    ),
}


@pytest.mark.parametrize("case", KILLS)
def test_resume_after_a_kill_gives_the_uninterrupted_results(
    case, simulated, uninterrupted, tmp_path, caplog
):
    point, reused, recomputed = KILLS[case]
    out, work = tmp_path / "out.zarr", tmp_path / "work"
    work.mkdir()
    run_killed(simulated, out, work, point)
    (store,) = work.glob("recall-work-*")
    assert (store / "manifest.json").is_file()
    caplog.set_level(logging.INFO, logger="recall_dask")
    command = ["run", str(simulated), "-o", str(out), "--work-dir", str(work), "--resume"]
    assert main([*command, *OPTIONS, *CLUSTER]) == 0
    logged = [r.getMessage() for r in caplog.records]
    for stage in reused:
        assert f"reused from the work store: {stage}" in " ".join(logged), (stage, logged)
    assert not any(line.endswith(f"work store: {recomputed}") for line in logged)
    assert not store.exists(), "removed after a successful run"
    resumed = ad.read_zarr(out)
    for key in ("recall", "recall_initial"):
        np.testing.assert_array_equal(resumed.obs[key], uninterrupted.obs[key])
    # Reused stages are exact; a recomputed embedding is the same as any rerun's, to float
    # rounding (threaded BLAS may sum in another order).
    np.testing.assert_allclose(
        resumed.obsm["X_recall_pca"], uninterrupted.obsm["X_recall_pca"], atol=1e-10
    )
    a, b = dict(resumed.uns["recall"]), dict(uninterrupted.uns["recall"])
    del a["stage_seconds"], b["stage_seconds"]  # this process's time; reused stages took none
    assert_same(a, b)


def fingerprint(source: Path, **options: object) -> dict:
    return run_fingerprint(source, {**RecallParams(**options).as_dict(), "layer": None})


def left_behind(source: Path, out: Path, work: Path, **options: object) -> Path:
    """The work store a failed run of these options leaves, with one finished stage."""
    with (
        pytest.raises(RuntimeError),
        checkpoint_store(work, out, fingerprint(source, **options), resume=False, keep=False) as c,
    ):
        c.save("genes", {"genes": np.arange(3)})
        raise RuntimeError("killed")
    (store,) = work.glob("recall-work-*")
    return store


def test_a_changed_parameter_is_one_line_naming_it_exit_2(simulated, tmp_path, capsys):
    out, work = tmp_path / "out.zarr", tmp_path / "work"
    work.mkdir()
    store = left_behind(simulated, out, work, seed=0)
    command = ["run", str(simulated), "-o", str(out), "--work-dir", str(work), "--resume"]
    capsys.readouterr()
    assert main([*command, "--seed", "1", "--chunk-size", "64", "--n-workers", "1"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--seed was 0, now 1" in line and "chunk" not in line, line
    assert main(["run", str(simulated), "-o", str(out), "--work-dir", str(work)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--resume" in line and str(store) in line, line
    assert store.is_dir() and not out.exists(), "nothing mixed, nothing removed"


def test_a_changed_input_is_named(simulated, tmp_path):
    source = tmp_path / "sim.h5"
    source.write_bytes(simulated.read_bytes())
    out, work = tmp_path / "out.zarr", tmp_path / "work"
    work.mkdir()
    left_behind(source, out, work)
    os.utime(source, (1, 1))
    with (
        pytest.raises(InputError, match=r"the input .*sim\.h5 \(its mtime changed\)"),
        checkpoint_store(work, out, fingerprint(source), resume=True, keep=False),
    ):
        pass


def test_stages_are_trusted_only_with_their_entry(simulated, tmp_path):
    out, work = tmp_path / "out.zarr", tmp_path / "work"
    work.mkdir()
    store = left_behind(simulated, out, work)
    (store / "embedding-0.npz").write_bytes(b"half a file")  # data written, entry not
    with checkpoint_store(work, out, fingerprint(simulated), resume=True, keep=True) as c:
        np.testing.assert_array_equal(c.load("genes")["genes"], np.arange(3))
        assert c.load("embedding-0") is None
        assert c.arrays("embedding-0", lambda: {"x": np.eye(2)})["x"].shape == (2, 2)
    assert store.is_dir(), "--keep-work"
    with checkpoint_store(work, out, fingerprint(simulated), resume=True, keep=False) as c:
        np.testing.assert_array_equal(c.load("embedding-0")["x"], np.eye(2))
    assert not store.exists()


def test_resume_and_keep_work_need_a_work_dir(simulated, tmp_path, capsys):
    for option in ("--resume", "--keep-work"):
        assert main(["run", str(simulated), "-o", str(tmp_path / "o.zarr"), option]) == 2
        assert "--work-dir" in capsys.readouterr().err


def test_each_output_has_its_own_work_store(tmp_path):
    a, b = (work_store_name(Location.of(tmp_path / f"{name}.zarr")) for name in "ab")
    assert a != b and a.startswith("recall-work-a.zarr-")
