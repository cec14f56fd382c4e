"""Scale-out: how much of a run the client does, and what more workers would buy (issue 26).

Each run is ``recall-dask run`` in a fresh process tree on a local cluster of ``--workers``
worker processes (``--threads-per-worker`` each), measured three ways:

* **CPU share.** Every 0.5 s, the CPU seconds (user + system) of the root process, the
  client, and of all its descendants, the workers (benchmarks/_measure.py). With a
  ``LocalCluster`` the scheduler and the nannies live in the client process, so the client's
  seconds include theirs. The client's share, client / (client + workers), bounds the
  speed-up of more workers at 1 / share (Amdahl), if the client's work is serial.
* **Wall time and peak memory** of the whole tree, process start to exit, and the seconds of
  it with no task running on any worker: the client's (and scheduler's) time alone.
* **Task replay.** A scheduler preload (benchmarks/_task_record.py, via dask config
  ``distributed.scheduler.preload``; it needs nothing of the package) records every task's
  submission, compute interval and dependencies; benchmarks/_replay.py replays them by list
  scheduling on P = 2, 8, 32 and 128 workers with the client's reaction gaps on the
  critical path (the model is in its docstring): the projected wall time at each P, and at
  the measured P beside the measured wall (the replay's error).

Parts (``--parts``): ``pbmc``, the bundled PBMC 3k with ``--draws 10``; ``sim``,
``--cells`` simulated cells (20,000 genes, 8 groups; ``recall-dask simulate``, kept in
``--data-dir``) with 1 and 10 draws. ``--draws`` replaces both parts' draw counts.

Before and after a change are measured by this same script: ``--checkout`` runs the
package of another checkout (it goes first on ``PYTHONPATH``; ``--python`` picks its
interpreter), ``--label`` names its rows (default: that checkout's commit). Runs are
appended to ``DATA_DIR/scaleout.json`` with each task record beside it; the table (the
latest run of each label, data, draws and workers) is printed and written between the
``scaleout`` markers of docs/benchmarks/performance.md, and the projected and measured wall
times are plotted against workers.

    python benchmarks/scaleout.py --parts pbmc --workers 2
    python benchmarks/scaleout.py --parts pbmc --workers 2 --checkout ../old --label before
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _measure import measure, replace_readme_section  # noqa: E402
from _replay import idle_seconds, replay, tasks_of, threads_per_worker  # noqa: E402
from scale import simulated_h5  # noqa: E402

from recall_dask import io  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The docs page that the table goes to, and its plot beside it.
PAGE = ROOT / "docs" / "benchmarks" / "performance.md"
PLOT = "scaleout.png"
PRELOAD = Path(__file__).resolve().parent / "_task_record.py"
#: Workers of the replay's projections.
REPLAY_WORKERS = (2, 8, 32, 128)
#: Seconds between two samples of the process tree's CPU times and memory.
INTERVAL = 0.5
PART_DRAWS = {"pbmc": [10], "sim": [1, 10]}


def run_once(
    command: list[str], checkout: Path, workers: int, threads: int, records: Path
) -> dict[str, Any]:
    """One measured run of ``command`` (``recall-dask run`` without its cluster options);
    the task record goes to ``records``."""
    cluster = ["--n-workers", str(workers), "--threads-per-worker", str(threads)]
    path = os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))
    env = {
        "PYTHONPATH": path,
        "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": str(PRELOAD),
        "RECALL_TASK_RECORD": str(records),
    }
    records.unlink(missing_ok=True)  # a record left by an earlier run is no answer
    # In the checkout: ``python -m`` puts the working directory first on the path.
    measured = measure([*command, *cluster], INTERVAL, env, cwd=checkout)
    record = json.loads(records.read_text())
    tasks = tasks_of(record)
    slots = threads_per_worker(record)
    projected = {
        str(p): replay(tasks, p * slots, measured.started, measured.ended)
        for p in sorted({*REPLAY_WORKERS, workers})
    }
    client, worker = measured.usage.client_seconds, measured.usage.worker_seconds
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "client_cpu": client,
        "worker_cpu": worker,
        "share": client / (client + worker),
        "wall": measured.wall,
        "peak_gib": measured.peak_gib,
        "tasks": len(tasks),
        "task_seconds": sum(task.duration for task in tasks),
        "idle": idle_seconds(tasks, measured.started, measured.ended),
        "projected": projected,
        "replay_error": projected[str(workers)] / measured.wall - 1,
    }


def answer_of(out: Path) -> dict[str, Any]:
    """What the run answered, and its stages' seconds."""
    record = io.read_results(out).uns["recall"]
    timed = record["stage_seconds"]
    return {
        "n_clusters": int(record["n_clusters"]),
        "n_iterations": int(record["n_iterations"]),
        "stage_seconds": dict(zip(timed["stage"], map(float, timed["seconds"]), strict=True)),
    }


def part_input(part: str, data_dir: Path, cells: int) -> tuple[Path, str]:
    """The input of a part and its name in the table."""
    if part == "pbmc":
        return Path(io.BUNDLED_PBMC3K), "PBMC 3k"
    return simulated_h5(data_dir, cells, 20_000, 8), f"{cells:,} simulated"


def commit_of(checkout: Path) -> str:
    """The checkout's commit, with ``-dirty`` for uncommitted changes."""
    described = ["git", "-C", str(checkout), "describe", "--always", "--dirty"]
    return subprocess.run(described, capture_output=True, text=True, check=True).stdout.strip()


def table(runs: list[dict[str, Any]]) -> str:
    """The latest run of each label, data, draws and workers, as Markdown."""
    latest = {(r["label"], r["data"], r["draws"], r["workers"]): r for r in runs}
    heading = " / ".join(map(str, REPLAY_WORKERS))
    lines = [
        "| label | data | draws | workers | client CPU-s | worker CPU-s | client share "
        "| bound 1/share | wall s | no task running, s | peak GiB "
        f"| projected wall s, P = {heading} | replay error at measured P "
        "| clusters | calibration s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in latest.values():
        projected = " / ".join(f"{r['projected'][str(p)]:.0f}" for p in REPLAY_WORKERS)
        calibration = r.get("stage_seconds", {}).get("calibration", 0)
        lines.append(
            f"| {r['label']} | {r['data']} | {r['draws']} | {r['workers']} "
            f"| {r['client_cpu']:.0f} | {r['worker_cpu']:.0f} | {r['share']:.2f} "
            f"| {1 / r['share']:.1f} | {r['wall']:.0f} | {r['idle']:.0f} | {r['peak_gib']:.2f} "
            f"| {projected} "
            f"| {r['replay_error']:+.0%} "
            f"| {r.get('n_clusters', '')} | {calibration:.0f} |"
        )
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """Per label, data and draws: the wall time projected from the run with the fewest
    workers (dashed; durations measured with fewer workers on the same cores suffer less
    contention) and the measured wall time of every worker count (solid)."""
    curves: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        curves.setdefault((r["label"], r["data"], r["draws"]), []).append(r)
    figure, axes = plt.subplots(figsize=(6, 4), layout="constrained")
    ticks: set[int] = set()
    for (label, data, draws), group in curves.items():
        name = f"{label}, {data}, {draws} draws"
        reference = min(group, key=lambda r: r["workers"])
        projected = sorted((int(p), wall) for p, wall in reference["projected"].items())
        replayed = f"{name}, replay of {reference['workers']} workers"
        (line,) = axes.plot(*zip(*projected, strict=True), "o--", mfc="none", label=replayed)
        measured = sorted({r["workers"]: r["wall"] for r in group}.items())
        axes.plot(*zip(*measured, strict=True), "s-", color=line.get_color(), label=name)
        ticks.update(p for p, _ in projected + measured)
    axes.set(xscale="log", xlabel="workers P", ylabel="wall s", ylim=(0, None))
    axes.set_xticks(sorted(ticks), map(str, sorted(ticks)))
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = os.cpu_count() or 1
    add = parser.add_argument
    add("--parts", nargs="+", default=["pbmc", "sim"], choices=sorted(PART_DRAWS))
    add("--draws", type=int, nargs="+", default=None, help="default: 10 (pbmc), 1 10 (sim)")
    add("--cells", type=int, default=200_000, help="cells of the sim part")
    add(
        "--workers",
        type=int,
        nargs="+",
        default=[2**k for k in range(5) if 2**k <= cores],
        help="worker counts, one run each (default: 1, 2, 4, 8, 16 up to the cores)",
    )
    add("--threads-per-worker", type=int, default=1, help="threads (task slots) of each worker")
    add("--python", default=sys.executable, help="interpreter of the measured runs")
    add("--checkout", type=Path, default=ROOT, help="checkout whose package is measured")
    add("--label", default=None, help="name of the rows (default: the checkout's commit)")
    add("--data-dir", type=Path, default=ROOT / "benchmarks" / "out")
    add("--run-options", default="", help="more options of the runs: '--louvain-starts 1'")
    args = parser.parse_args()
    args.data_dir = args.data_dir.resolve()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    checkout = args.checkout.resolve()
    commit = commit_of(checkout)
    label = args.label or commit
    results = args.data_dir / "scaleout.json"
    runs = json.loads(results.read_text()) if results.exists() else []
    for part in args.parts:
        source, data = part_input(part, args.data_dir, args.cells)
        for draws in args.draws or PART_DRAWS[part]:
            for workers in args.workers:
                run_name = f"scaleout_{label}_{part}_d{draws}_w{workers}{args.run_options}"
                name = re.sub(r"[^\w.-]+", "-", run_name)
                with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
                    command = [args.python, "-m", "recall_dask", "run", str(source)]
                    command += ["-o", f"{tmp}/out.zarr", "--work-dir", tmp, "--quiet"]
                    command += ["--draws", str(draws), *args.run_options.split()]
                    record = args.data_dir / f"{name}_tasks.json"
                    run = run_once(command, checkout, workers, args.threads_per_worker, record)
                    run |= answer_of(Path(tmp) / "out.zarr")
                run = {"label": label, "commit": commit, "data": data, "draws": draws, **run}
                runs.append({**run, "date": time.strftime("%Y-%m-%d %H:%M")})
                results.write_text(json.dumps(runs, indent=1))
                print(table([run]).splitlines()[-1], flush=True)
    text = table(runs)
    print(text, flush=True)
    plot(runs, PAGE.parent / PLOT)
    note = (
        "Client: the root process, with the local cluster's scheduler and nannies in it; "
        "workers: all its descendants. Replay: benchmarks/_replay.py."
    )
    replace_readme_section(
        PAGE,
        "scaleout",
        f"{text}\n\n{note}\n\n![wall time against workers]({PLOT})\n",
    )


if __name__ == "__main__":
    main()
