"""What a run shows: stage and iteration lines, progress bars, and silence when asked."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
from conftest import simulate_dense

from recall_dask import progress
from recall_dask.api import recall
from recall_dask.cli import main
from recall_dask.dask_cluster import ClusterConfig, dask_client


@pytest.fixture
def watched(monkeypatch):
    """As if a terminal were attached, and every pass long enough to show its bar."""
    monkeypatch.setattr(progress, "_interactive", lambda: True)
    monkeypatch.setattr(progress, "_MINIMUM_SECONDS", 0.0)


def summed(n_blocks: int = 6) -> da.Array:
    return da.ones((600, 4), chunks=(600 // n_blocks, 4)).sum(axis=0)


def test_compute_gives_what_dask_compute_gives(watched, capsys):
    with progress.reporting(False):
        (quiet,) = progress.compute(summed())
    assert capsys.readouterr().out == ""
    with progress.reporting(True):
        (shown,) = progress.compute(summed())
    np.testing.assert_array_equal(quiet, np.full(4, 600.0))
    np.testing.assert_array_equal(shown, quiet)
    assert "100% Completed" in capsys.readouterr().out


def test_bar_on_a_distributed_client(watched, capsys):
    with dask_client(ClusterConfig(n_workers=1)), progress.reporting(True):
        (total,) = progress.compute(summed())
    np.testing.assert_array_equal(total, np.full(4, 600.0))
    bar = capsys.readouterr().out
    assert "100% Completed" in bar and "#" in bar


def test_no_bar_without_anyone_watching(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_interactive", lambda: False)
    monkeypatch.setattr(progress, "_MINIMUM_SECONDS", 0.0)
    with progress.reporting(True):
        progress.compute(summed())
    assert capsys.readouterr().out == ""


def info_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("recall_dask") and r.levelno == logging.INFO
    ]


def test_recall_reports_stages_and_iterations_or_nothing(caplog):
    caplog.set_level("DEBUG")
    adata = simulate_dense(400, 400, 2, seed=3)
    recall(adata.copy(), seed=1, n_hvg=200, progress=False)
    assert info_lines(caplog) == []
    recall(adata, seed=1, n_hvg=200)
    lines = info_lines(caplog)
    for stage in ("variable genes", "null fits", "scaling and PCA", "calibration"):
        assert any(line.startswith(f"{stage} done in") for line in lines), stage
    assert any(line.startswith("iteration 1: resolution 0.8,") for line in lines)


def test_lines_reach_stderr_when_logging_is_not_configured(monkeypatch, capsys):
    """A plain script or notebook: no handler anywhere, yet the lines show."""
    monkeypatch.setattr(logging.root, "handlers", [])
    with progress.reporting(True):
        logging.getLogger("recall_dask.progress").info("scaling and PCA ...")
    logging.getLogger("recall_dask.progress").info("after the run")
    assert capsys.readouterr().err == "scaling and PCA ...\n"


def test_quiet_command_line_prints_nothing(tmp_path, capsys, caplog):
    caplog.set_level("DEBUG")
    source = tmp_path / "sim.zarr"
    main(["simulate", "-o", str(source), "--cells", "300", "--genes", "300", "--groups", "2"])
    assert any(line.startswith("wrote") for line in info_lines(caplog))
    caplog.clear()
    argv = ["run", str(source), "-o", str(tmp_path / "out.zarr"), "--n-workers", "1"]
    assert main([*argv, "--n-hvg", "100", "--quiet"]) == 0
    assert info_lines(caplog) == []
    shown = capsys.readouterr()
    assert shown.out == "" and shown.err == ""
