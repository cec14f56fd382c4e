"""Where a run executes never changes its labels: local clusters, an external scheduler (plain
and TLS), SLURM; and a run survives losing a worker mid pairwise tests or mid clustering.

External clusters are real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1. The
SLURM test needs a running slurmctld (CI starts one with ``.ci/slurm-up``) and skips without.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from conftest import simulate_dense
from distributed import Client
from distributed.security import Security

from recall_dask import cli
from recall_dask.dask_cluster import ClusterConfig, dask_client
from recall_dask.errors import InputError

PRELOAD_KILL = Path(__file__).parent / "preload" / "kill_worker.py"
RUN_OPTIONS = ["--seed", "1", "--n-hvg", "500", "--quiet"]


@pytest.fixture(scope="module")
def counts_file(tmp_path_factory) -> Path:
    """Five groups (the seed test_pipeline recovers), as an .h5ad for the command line."""
    path = tmp_path_factory.mktemp("data") / "five_groups.h5ad"
    simulate_dense(1500, 1500, 5, de_prob=0.1, seed=1).write_h5ad(path)
    return path


def run_cli(counts: Path, out_dir: Path, *options: str, env: dict | None = None) -> pd.Series:
    """``recall-dask run`` in a fresh process; the labels it wrote, by barcode."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = out_dir / "labels.csv"
    command = [sys.executable, "-m", "recall_dask", "run", str(counts), "-o"]
    command += [str(out_dir / "out.zarr"), "--labels-csv", str(labels), *RUN_OPTIONS, *options]
    result = subprocess.run(
        command, cwd=out_dir, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return pd.read_csv(labels, index_col="barcode")["cluster"]


@pytest.fixture(scope="module")
def reference(counts_file, tmp_path_factory) -> pd.Series:
    """Labels from the default local cluster: two worker processes."""
    labels = run_cli(counts_file, tmp_path_factory.mktemp("reference"), "--n-workers", "2")
    assert labels.nunique() == 5
    return labels


@contextmanager
def external_cluster(
    tmp_path: Path,
    n_workers: int,
    *,
    options: tuple = (),
    scheduler_options: tuple = (),
    env: dict | None = None,
    security: Security | None = None,
):
    """``dask scheduler`` and ``n_workers`` ``dask worker`` processes (each with its nanny, in
    its own process group) on 127.0.0.1, all given ``options``; yields the scheduler address
    and the processes, the scheduler first."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, **(env or {})}
    common = dict(env=env, start_new_session=True, stdout=subprocess.DEVNULL, cwd=tmp_path)
    processes = []
    try:
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
                + ["--port", "0", "--dashboard-address", "127.0.0.1:0"]
                + ["--scheduler-file", str(scheduler_file), *options, *scheduler_options],
                stderr=open(tmp_path / "scheduler.log", "w"),  # noqa: SIM115
                **common,
            )
        )
        _wait_for(scheduler_file.exists, "the scheduler file")
        for i in range(n_workers):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker"]
                    + ["--scheduler-file", str(scheduler_file), "--host", "127.0.0.1"]
                    + ["--nthreads", "1", "--no-dashboard", "--memory-limit", "3GiB", *options],
                    stderr=open(tmp_path / f"worker{i}.log", "w"),  # noqa: SIM115
                    **common,
                )
            )
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, security=security, timeout=30) as client:
            client.wait_for_workers(n_workers, timeout=60)
        yield address, processes
    finally:
        for process in reversed(processes):
            _kill_group(process)


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(0.2)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- same labels wherever it runs ---------------------------------------------------------


def test_one_local_worker_gives_the_same_labels(counts_file, reference, tmp_path):
    labels = run_cli(counts_file, tmp_path, "--n-workers", "1", "--threads-per-worker", "1")
    pd.testing.assert_series_equal(labels, reference)


def test_external_scheduler_gives_the_same_labels(counts_file, reference, tmp_path):
    with external_cluster(tmp_path, 2) as (address, _):
        by_option = run_cli(counts_file, tmp_path / "option", "--scheduler", address)
        by_env = run_cli(counts_file, tmp_path / "env", env={"DASK_SCHEDULER_ADDRESS": address})
    pd.testing.assert_series_equal(by_option, reference)
    pd.testing.assert_series_equal(by_env, reference)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return key, cert


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_tls_scheduler_with_dask_security_config(counts_file, reference, tmp_path):
    key, cert = _self_signed(tmp_path)
    tls = ("--protocol", "tls", "--tls-ca-file", str(cert))
    tls += ("--tls-cert", str(cert), "--tls-key", str(key))
    security = {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(cert),
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(key),
    }
    client_security = Security(
        tls_ca_file=str(cert), tls_client_cert=str(cert), tls_client_key=str(key)
    )
    with external_cluster(tmp_path, 2, options=tls, security=client_security) as (address, _):
        assert address.startswith("tls://")
        labels = run_cli(counts_file, tmp_path / "run", "--scheduler", address, env=security)
        without = subprocess.run(
            [sys.executable, "-m", "recall_dask", "run", str(counts_file), "-o"]
            + [str(tmp_path / "plain.zarr"), "--scheduler", address],
            env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"},
            capture_output=True,
            text=True,
        )
    pd.testing.assert_series_equal(labels, reference)
    assert without.returncode == 2
    assert "needs TLS settings" in without.stderr
    assert "Traceback" not in without.stderr
    assert not (tmp_path / "plain.zarr").exists()


@pytest.mark.parametrize(
    "prefix",
    ["pair_tests_of_block", "recall-cluster-draw0-iteration0"],
    ids=["pairwise-test", "clustering"],
)
def test_worker_lost_mid_task(prefix, counts_file, reference, tmp_path):
    """A worker (nanny and all) is SIGKILLed when it is given the first pairwise-test task, or
    the first clustering; the run finishes on the other worker with the same labels."""
    record = tmp_path / "killed.json"
    kill = {"RECALL_KILL_PREFIX": prefix, "RECALL_KILL_RECORD": str(record)}
    preload = ("--preload", str(PRELOAD_KILL))
    with external_cluster(tmp_path, 2, scheduler_options=preload, env=kill) as (
        address,
        processes,
    ):
        labels = run_cli(counts_file, tmp_path / "run", "--scheduler", address)
        killed = json.loads(record.read_text())
        survivors = [p for p in processes[1:] if p.poll() is None]
    assert prefix in killed["key"]
    assert len(survivors) == 1, "exactly one worker was lost"
    pd.testing.assert_series_equal(labels, reference)


def _slurm_running() -> bool:
    if shutil.which("sinfo") is None:
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return result.returncode == 0 and any(
        state in result.stdout for state in ("idle", "mixed", "allocated")
    )


@pytest.mark.skipif(
    not _slurm_running(), reason="no SLURM controller answers here (CI starts one: .ci/slurm-up)"
)
def test_slurm_cluster_gives_the_same_labels(counts_file, reference, tmp_path):
    pytest.importorskip("dask_jobqueue")
    labels = run_cli(
        counts_file,
        tmp_path,
        *("--cluster", "slurm", "--jobs", "1", "--cores", "2", "--memory", "4GiB"),
        *("--walltime", "00:15:00"),
        env={"DASK_JOBQUEUE__SLURM__INTERFACE": "lo"},  # scheduler and workers on 127.0.0.1
    )
    pd.testing.assert_series_equal(labels, reference)
    assert list(tmp_path.glob("slurm-*.out")), "the workers ran as SLURM jobs"


# --- cluster set-up -----------------------------------------------------------------------


def test_cluster_options_reach_the_slurm_cluster(monkeypatch):
    jobqueue = pytest.importorskip("dask_jobqueue")
    made = {}

    class FakeSLURMCluster:
        def __init__(self, **options):
            made["options"] = options

        def scale(self, jobs):
            made["jobs"] = jobs

    monkeypatch.setattr(jobqueue, "SLURMCluster", FakeSLURMCluster)
    from recall_dask.dask_cluster import _slurm

    args = cli._parser().parse_args(
        ["run", "x.h5", "-o", "o.zarr", "--cluster", "slurm", "--queue", "short", "--jobs", "3"]
        + ["--account", "lab", "--walltime", "01:00:00", "--cores", "8", "--memory", "32GiB"]
    )
    config = ClusterConfig(**{f: getattr(args, f) for f in ClusterConfig.__dataclass_fields__})
    _slurm(config)
    assert made == {
        "options": {
            "queue": "short",
            "account": "lab",
            "walltime": "01:00:00",
            "cores": 8,
            "memory": "32GiB",
        },
        "jobs": 3,
    }
    _slurm(ClusterConfig(kind="slurm"))  # nothing given: dask-jobqueue reads jobqueue.yaml
    assert made["options"] == {} and made["jobs"] == 1


def test_cluster_options_reach_the_kubernetes_operator(monkeypatch):
    operator = pytest.importorskip("dask_kubernetes.operator")
    made = {}
    monkeypatch.setattr(operator, "KubeCluster", lambda **options: made.update(options))
    from recall_dask.dask_cluster import _kubernetes

    _kubernetes(ClusterConfig(kind="kubernetes", image="registry/recall-dask:0.1.0", n_workers=4))
    assert made == {"image": "registry/recall-dask:0.1.0", "n_workers": 4}


def test_missing_extra_is_an_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # as if not installed
    with (
        pytest.raises(InputError, match=r"pip install 'recall-dask\[slurm\]'"),
        dask_client(ClusterConfig(kind="slurm")),
    ):
        pass


def test_slurm_without_cores_or_memory_is_an_input_error():
    pytest.importorskip("dask_jobqueue")
    with (
        pytest.raises(InputError, match="--cluster slurm: .*cores and memory"),
        dask_client(ClusterConfig(kind="slurm")),
    ):
        pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "yarn"}, "--cluster must be one of"),
        ({"jobs": 0}, "--jobs must be >= 1"),
        ({"cores": 0}, "--cores must be >= 1"),
        ({"n_workers": 0}, "--n-workers must be >= 1"),
    ],
)
def test_bad_cluster_options(options, message):
    with pytest.raises(InputError, match=message):
        ClusterConfig(**options)


def test_local_cluster_listens_on_loopback_only():
    with dask_client(ClusterConfig(n_workers=1, threads_per_worker=1)) as client:
        info = client.scheduler_info()
        addresses = [info["address"], *info["workers"]]
        dashboard = client.dashboard_link
    assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
    assert dashboard.startswith("http://127.0.0.1:")


def test_scheduler_from_dask_config():
    import dask

    with dask.config.set({"scheduler-address": "tcp://10.0.0.1:8786"}):
        assert ClusterConfig().scheduler_address() == "tcp://10.0.0.1:8786"
        assert ClusterConfig(scheduler="tls://a:1").scheduler_address() == "tls://a:1"


def test_unreachable_scheduler_is_an_input_error():
    import dask

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(InputError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
        dask_client(ClusterConfig(scheduler="tcp://127.0.0.1:9")),
    ):
        pass


def test_client_is_closed_after_run():
    with dask_client(ClusterConfig(n_workers=1, threads_per_worker=1)) as client:
        assert isinstance(client, Client)
    assert client.status == "closed"
