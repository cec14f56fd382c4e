"""Scaling benchmark: simulate, then `recall-dask run`, at growing numbers of cells.

For each size, ``recall-dask simulate`` writes a Zarr store of 20,000 genes and 8 known groups
(not timed), then ``recall-dask run`` clusters it in a fresh process tree. We record wall time
per stage, the peak resident memory summed over all processes, and the ARI against the true
groups, and write the table and a log-log plot into README.md.

    python benchmarks/scale.py --cells 50000 100000 200000 [--genes 20000] [--groups 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _measure import replace_readme_section, run_measured  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLOT = "benchmarks/scale.png"


def one_size(tmp: Path, n_cells: int, n_genes: int, n_groups: int) -> dict[str, object]:
    data, out = tmp / f"sim{n_cells}.zarr", tmp / f"out{n_cells}.zarr"
    cli = [sys.executable, "-m", "recall_dask"]
    run_measured(
        [
            *cli,
            "simulate",
            "-o",
            str(data),
            "--cells",
            str(n_cells),
            "--genes",
            str(n_genes),
            "--groups",
            str(n_groups),
            "--quiet",
        ]
    )
    wall, peak = run_measured([*cli, "run", str(data), "-o", str(out), "--quiet"])
    result = ad.read_zarr(out)
    record = result.uns["recall"]
    stages = dict(
        zip(record["stage_seconds"]["stage"], record["stage_seconds"]["seconds"], strict=True)
    )
    return {
        "cells": n_cells,
        "wall": wall,
        "peak": peak,
        "stages": stages,
        "iterations": int(record["n_iterations"]),
        "clusters": int(record["n_clusters"]),
        "ari": adjusted_rand_score(result.obs["group"], result.obs["recall_clusters"]),
    }


def table(rows: list[dict[str, object]]) -> str:
    stages = list(rows[0]["stages"])
    header = ["cells", "wall s", "peak GiB", *stages, "iterations", "clusters", "ARI"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            f"{row['cells']:,}",
            f"{row['wall']:.0f}",
            f"{row['peak']:.2f}",
            *(f"{row['stages'][s]:.1f}" for s in stages),
            str(row["iterations"]),
            str(row["clusters"]),
            f"{row['ari']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n![wall time and memory against cells]({PLOT})\n"


def plot(rows: list[dict[str, object]]) -> None:
    cells = [r["cells"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(cells, [r["wall"] for r in rows], "o-", label="wall time (s)")
    ax.loglog(cells, [r["peak"] for r in rows], "s-", label="peak memory (GiB)")
    reference = [rows[0]["wall"] * c / cells[0] for c in cells]
    ax.loglog(cells, reference, "k:", label="linear in cells")
    ax.set_xlabel("cells")
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / PLOT, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[50_000, 100_000, 200_000])
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one_size(Path(tmp), n, args.genes, args.groups) for n in args.cells]
    text = table(rows)
    print(text)
    plot(rows)
    replace_readme_section(ROOT / "README.md", "scale-benchmark", text)


if __name__ == "__main__":
    main()
