"""Scaling benchmark: `recall-dask run` from a Cell Ranger .h5 at growing numbers of cells.

For each size, ``recall-dask simulate`` writes a Cell Ranger v3 .h5 of 20,000 genes and 8 known
groups (not timed; kept in ``--data-dir`` for later runs). Then ``recall-dask run`` ingests it
and clusters it in a fresh process tree: we record wall time (ingest included), the time of
each stage, the peak resident memory summed over all processes (client, scheduler, workers)
and the ARI against the true groups. Results accumulate in ``DATA_DIR/results.json``, so sizes
can be run on different days; the table, the growth exponent of the wall time and of each
stage (time ~ cells^b fitted over all sizes) and a log-log plot of all of them go into
docs/benchmarks/performance.md. ``--cells`` with no sizes rewrites them from the results file alone.

``--in-memory N`` also clusters the N-cell data as an in-memory AnnData (augmented matrix kept
in worker memory instead of the Zarr work store) and reports the ARI between the two label sets.

    python benchmarks/scale.py --cells 50000 100000 200000 --in-memory 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import zarr
from anndata.io import read_elem

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _measure import replace_readme_section, run_measured  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from recall_dask.simulate import group_labels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The manual's page that holds this script's tables, between their markers.
PAGE = ROOT / "docs" / "benchmarks" / "performance.md"
#: The figure, beside its page (the page links it by this relative path).
PLOT = "scale.png"
CLI = [sys.executable, "-m", "recall_dask"]
#: Runs the command line and records each pass's graph size (benchmarks/_graphs.py).
RECORDER = Path(__file__).resolve().parent / "_graphs.py"
# Stages as uns['recall']['stage_seconds'] names them, with short table headings.
STAGES = {
    "variable genes": "HVG",
    "null fits": "nulls",
    "artificial genes and normalization": "augment",
    "scaling and PCA": "PCA",
    "neighbor graph": "graph",
    "calibration": "calibration",
}


def simulated_h5(data_dir: Path, n_cells: int, n_genes: int, n_groups: int) -> Path:
    path = data_dir / f"sim_{n_cells}x{n_genes}_{n_groups}groups.h5"
    if not path.exists():
        command = ["simulate", "-o", str(path), "--quiet"]
        sizes = ["--cells", str(n_cells), "--genes", str(n_genes), "--groups", str(n_groups)]
        run_measured([*CLI, *command, *sizes])
    return path


def one_size(
    data_dir: Path, n_cells: int, n_genes: int, n_groups: int, options: tuple[str, ...] = ()
) -> dict[str, object]:
    """``recall-dask run`` with ``options`` on the simulated .h5 of this size, measured."""
    source = simulated_h5(data_dir, n_cells, n_genes, n_groups)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        out, graphs = Path(tmp) / "out.zarr", Path(tmp) / "graphs.json"
        command = [sys.executable, str(RECORDER), "run", str(source), "-o", str(out)]
        command += ["--work-dir", tmp, "--quiet"]
        wall, peak = run_measured([*command, *options], env={"RECALL_GRAPHS": str(graphs)})
        passes = json.loads(graphs.read_text())
        root = zarr.open_group(out, mode="r")  # obs and uns only: X may not fit in memory
        record = read_elem(root["uns/recall"])
        labels = read_elem(root["obs"])["recall"].cat.codes.to_numpy()
        nnz = int(root["X/data"].shape[0])
    stages = dict(
        zip(record["stage_seconds"]["stage"], record["stage_seconds"]["seconds"], strict=True)
    )
    return {
        "cells": n_cells,
        "genes": n_genes,
        "groups": n_groups,
        "nnz": nnz,
        "wall": wall,
        "peak": peak,
        "stages": {name: float(seconds) for name, seconds in stages.items()},
        "iterations": int(record["n_iterations"]),
        "clusters": int(record["n_clusters"]),
        "ari": adjusted_rand_score(group_labels(n_cells, n_groups), labels),
        "labels_file": str(data_dir / f"labels_{n_cells}.npy"),
        "graphs": graph_sizes(passes),
        "_labels": labels,
    }


def graph_sizes(passes: list[dict[str, object]]) -> dict[str, dict[str, int]]:
    """Per stage: the passes (dask computations) it ran, and their high-level layers and tasks
    in all (``benchmarks/_graphs.py`` records them)."""
    sizes: dict[str, dict[str, int]] = {}
    for one in passes:
        size = sizes.setdefault(one["stage"], {"passes": 0, "layers": 0, "tasks": 0})
        size["passes"] += 1
        size["layers"] += one["layers"]
        size["tasks"] += one["tasks"]
    return sizes


def comparison(before: dict[str, dict], after: dict[str, dict]) -> str:
    """Graph sizes and wall time of the sizes measured both before and after a change; a stage
    that ran no pass on one side shows 0."""
    lines = [
        "| cells | stage | passes before | passes after | layers before | layers after "
        "| tasks before | tasks after |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    none = {"passes": 0, "layers": 0, "tasks": 0}
    walls = []
    for cells in sorted(set(before) & set(after), key=int):
        old, new = (_one_spelling(runs[cells]["graphs"]) for runs in (before, after))
        for stage in [*old, *(s for s in new if s not in old)]:
            a, b = old.get(stage, none), new.get(stage, none)
            lines.append(
                f"| {int(cells):,} | {stage} | {a['passes']} | {b['passes']} | "
                f"{a['layers']:,} | {b['layers']:,} | {a['tasks']:,} | {b['tasks']:,} |"
            )
        walls.append(
            f"{int(cells):,} cells: {_duration(before[cells]['wall'])} before, "
            f"{_duration(after[cells]['wall'])} after ({before[cells]['peak']:.2f} and "
            f"{after[cells]['peak']:.2f} GiB)"
        )
    return "\n".join(
        [*lines, "", "Wall time, process start to labels: " + "; ".join(walls) + ".", ""]
    )


def _one_spelling(graphs: dict[str, dict]) -> dict[str, dict]:
    """Stage names as now spelled: runs before the change say "neighbour graph"."""
    return {stage.replace("neighbour", "neighbor"): size for stage, size in graphs.items()}


def in_memory_agreement(data_dir: Path, row: dict[str, object]) -> dict[str, object]:
    """Run the same data as an in-memory AnnData in a fresh process; ARI with the store path."""
    source = simulated_h5(data_dir, row["cells"], row["genes"], row["groups"])
    labels_out = data_dir / f"labels_in_memory_{row['cells']}.npy"
    script = (
        "import sys, numpy as np, anndata as ad, tempfile\n"
        "from recall_dask import io\n"
        "from recall_dask.dask_cluster import ClusterConfig, dask_client\n"
        "from recall_dask.api import recall\n"
        "with tempfile.TemporaryDirectory() as tmp:\n"
        "    io.ingest(sys.argv[1], tmp + '/x.zarr')\n"
        "    adata = ad.read_zarr(tmp + '/x.zarr')\n"
        "with dask_client(ClusterConfig()):\n"
        "    recall(adata)\n"
        "np.save(sys.argv[2], adata.obs['recall'].cat.codes.to_numpy())\n"
    )
    wall, peak = run_measured([sys.executable, "-c", script, str(source), str(labels_out)])
    in_memory = np.load(labels_out)
    out_of_core = np.load(row["labels_file"])
    return {
        "cells": row["cells"],
        "wall": wall,
        "peak": peak,
        "ari": adjusted_rand_score(out_of_core, in_memory),
    }


def table(rows: list[dict[str, object]], agreement: dict[str, object] | None) -> str:
    header = ["cells", "wall", "peak GiB", *STAGES.values(), "ingest etc.", "iter.", "K", "ARI"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for row in rows:
        stages = row["stages"]
        cells = [
            f"{row['cells']:,}",
            _duration(row["wall"]),
            f"{row['peak']:.2f}",
            *(f"{stages[s]:.0f}" for s in STAGES),
            f"{row['wall'] - sum(stages.values()):.0f}",
            str(row["iterations"]),
            str(row["clusters"]),
            f"{row['ari']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\nStage columns are seconds. " + growth(rows)
    if agreement:
        text += (
            f" The same {agreement['cells']:,} cells as an in-memory AnnData (augmented matrix "
            f"in worker memory): {_duration(agreement['wall'])}, {agreement['peak']:.2f} GiB, "
            f"ARI {agreement['ari']:.3f} against the out-of-core labels."
        )
    return text + f"\n\n![wall time and memory against cells]({PLOT})\n"


def growth(rows: list[dict[str, object]]) -> str:
    """The exponent b of time ~ cells^b (least squares on log-log over all sizes), for the
    whole run and each stage: 1 is linear in cells."""
    if len(rows) < 2:
        return ""
    log_cells = np.log([r["cells"] for r in rows])

    def exponent(seconds: list[float]) -> str:
        return f"{np.polyfit(log_cells, np.log(seconds), 1)[0]:.2f}"

    stages = ", ".join(
        f"{short} {exponent([r['stages'][s] for r in rows])}" for s, short in STAGES.items()
    )
    return (
        f"Growth exponent b of time ~ cells^b, fitted over all sizes (1 is linear): wall "
        f"{exponent([r['wall'] for r in rows])}; {stages}."
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min"


def plot(rows: list[dict[str, object]]) -> None:
    cells = np.array([r["cells"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.loglog(cells, [r["wall"] for r in rows], "o-", label="wall time (s)")
    ax.loglog(cells, [r["peak"] for r in rows], "s-", label="peak memory (GiB)")
    ax.loglog(cells, rows[0]["wall"] * cells / cells[0], "k:", label="linear in cells")
    ax.set_xlabel("cells (20,000 genes)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(PAGE.parent / PLOT, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="*", default=[50_000, 100_000, 200_000])
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--in-memory", type=int, default=None, metavar="N")
    parser.add_argument("--data-dir", type=Path, default=Path("benchmark-data"))
    parser.add_argument(
        "--results", default="results.json", help="results file in --data-dir (default %(default)s)"
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="only write the graph-size comparison of two results files of --data-dir",
    )
    parser.add_argument(
        "--no-table",
        action="store_true",
        help="record the runs in --results but leave the table in the manual as it is",
    )
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    if args.compare:
        before, after = (json.loads((args.data_dir / f).read_text()) for f in args.compare)
        text = comparison(
            {k: v for k, v in before.items() if k.isdigit()},
            {k: v for k, v in after.items() if k.isdigit()},
        )
        print(text)
        replace_readme_section(PAGE, "graph-size-benchmark", text)
        return
    results_file = args.data_dir / args.results
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for n_cells in args.cells:
        row = one_size(args.data_dir, n_cells, args.genes, args.groups)
        np.save(row["labels_file"], row.pop("_labels"))
        results[str(n_cells)] = row
        results_file.write_text(json.dumps(results, indent=1))
        print(json.dumps(row), flush=True)
    if args.in_memory is not None:
        results["in_memory"] = in_memory_agreement(args.data_dir, results[str(args.in_memory)])
        results_file.write_text(json.dumps(results, indent=1))
        print(json.dumps(results["in_memory"]), flush=True)
    rows = sorted((v for k, v in results.items() if k.isdigit()), key=lambda r: r["cells"])
    text = table(rows, results.get("in_memory"))
    print(text)
    if args.no_table:
        return
    plot(rows)
    replace_readme_section(PAGE, "scale-benchmark", text)


if __name__ == "__main__":
    main()
