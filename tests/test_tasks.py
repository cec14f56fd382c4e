"""Each draw's embedding, graph and clusterings are tasks: on the workers of a distributed
client, where the client neither builds nor clusters a graph, and on the client's threads
without one, with the same labels."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import simulate_dense
from distributed import get_task_stream

from recall_dask import calibrate as calibrate_module
from recall_dask import tasks as tasks_module
from recall_dask.api import recall
from recall_dask.dask_cluster import ClusterConfig, dask_client
from recall_dask.errors import InputError
from recall_dask.graph import build as build_module

FAST = {"n_hvg": 300, "seed": 3}


def _refuse(*args, **kwargs):
    raise AssertionError("the client built or clustered a graph")


def test_graphs_and_clusterings_run_on_the_workers(tmp_path, monkeypatch, caplog):
    """With a distributed client, the client process never searches neighbors nor clusters
    (both refuse to run here; the workers import their own), the task stream names the
    draws' tasks, and the progress lines say which worker clustered each draw."""
    monkeypatch.setattr(build_module, "nearest_neighbors", _refuse)
    monkeypatch.setattr(calibrate_module, "cluster_graph", _refuse)
    caplog.set_level(logging.INFO, logger="recall_dask")
    adata = simulate_dense(600, 800, 3, de_prob=0.05, seed=5)
    with (
        dask_client(ClusterConfig(n_workers=2, threads_per_worker=1)) as client,
        get_task_stream(client) as stream,
    ):
        recall(adata, draws=3, work_dir=tmp_path, **FAST)
    names = {task["key"].split("-")[1] for task in stream.data if "recall-" in task["key"]}
    assert {"neighbor", "cluster"} <= names, names
    lines = [r.getMessage() for r in caplog.records if "clustered on" in r.getMessage()]
    assert lines and all("clustered on worker" in line for line in lines), lines
    assert adata.obs["recall"].nunique() == 3


def test_same_labels_on_workers_and_on_the_clients_threads():
    """One draw and three, on dask's threaded scheduler and on two workers: the same labels,
    confidence and iterations."""
    for draws in (1, 3):
        runs = []
        for where in ("threads", "workers"):
            adata = simulate_dense(600, 800, 3, de_prob=0.05, seed=5)
            if where == "workers":
                with dask_client(ClusterConfig(n_workers=2, threads_per_worker=1)):
                    recall(adata, draws=draws, **FAST)
            else:
                recall(adata, draws=draws, **FAST)
            record = adata.uns["recall"]
            runs.append(
                (
                    adata.obs["recall"].to_numpy(),
                    adata.obs.get("recall_confidence", adata.obs["recall"]).to_numpy(),
                    record["n_iterations"],
                    record["resolution"],
                )
            )
        for got, want in zip(runs[1], runs[0], strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_graph_too_large_for_any_worker_is_one_clear_error(monkeypatch):
    """Before clustering, a graph whose clustering would not fit in any worker's memory
    limit stops the run with the sizes and what to change."""
    monkeypatch.setattr(tasks_module, "CLUSTERING_MEMORY_PER_GRAPH_BYTE", 1e6)
    adata = simulate_dense(300, 500, 2, seed=2)
    with (
        dask_client(ClusterConfig(n_workers=1, threads_per_worker=1, memory_limit="1GiB")),
        pytest.raises(InputError, match=r"neighbor graph of .* GiB needs about .*--memory-limit"),
    ):
        recall(adata, **FAST)
