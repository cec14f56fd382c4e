"""One answer, not one draw: how ``--draws M`` steadies recall, and what it costs.

Parts (``--parts``, all by default):

* ``pbmc``: PBMC 3k for outer seeds 0-9 at each M of ``--draws``: the cluster count of every
  seed, how many seeds give the most common count, the ARI between the labels of every
  two seeds (median and minimum), the smallest fraction of draws that select a gene for a
  pair of final clusters and the consensus pairs merged, over all seeds; a plot of the spread
  against M. Results accumulate in
  ``DATA_DIR/stability_pbmc.json``, so each M can be measured in a run of its own.
* ``pbmc-r``: the same with the R package's null (``--null-method zip --depth none``), without
  the plot: where the consensus test merges pairs.
* ``null``: one homogeneous simulated population (2,000 cells x 1,500 genes, 1,000 of them
  variable, no groups):
  how often a single draw splits it over 50 seeds, against how often the majority of 10
  draws does; and five simulated groups with 10 draws (clusters, ARI).
* ``cost``: ``recall-dask run`` in a fresh process (process start to labels), wall time and
  peak memory of all processes, for PBMC 3k with 1 and 10 draws.
* ``scale``: the same for the simulated 200,000 cells of ``benchmarks/scale.py`` (20,000
  genes, 8 groups), with 1 and 10 draws, and for a deeper simulation of 200,000 cells at
  about 4,900 genes per cell (``recall-dask simulate --log-mean``), with 1 draw.

Each part writes its table between its own markers in docs/benchmarks/stability.md.

    python benchmarks/stability.py --parts pbmc null cost --data-dir /scratch/recall-bench
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections import Counter
from itertools import combinations
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _measure import replace_readme_section, run_measured  # noqa: E402
from scale import CLI, simulated_h5  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from recall_dask import io, recall  # noqa: E402
from recall_dask.simulate import group_labels, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The manual's page that holds this script's tables, between their markers.
PAGE = ROOT / "docs" / "benchmarks" / "stability.md"
#: The figure, beside its page (the page links it by this relative path).
PLOT = "stability.png"
OUTER_SEEDS = range(10)
#: The stages that every draw runs again, as ``uns['recall']['stage_seconds']`` names them.
DRAW_STAGES = (
    "artificial genes and normalization",
    "scaling and PCA",
    "neighbor graph",
    "calibration",
)
#: Mean log expression of the deep simulation: about 4,900 of 20,000 genes per cell.
DEEP_LOG_MEAN = -2.3


def pbmc_counts():
    """The bundled PBMC 3k as an in-memory AnnData of canonical counts."""
    with tempfile.TemporaryDirectory() as tmp:
        io.ingest(io.BUNDLED_PBMC3K, Path(tmp) / "pbmc.zarr")
        adata = io.open_counts(Path(tmp) / "pbmc.zarr")
        adata.X = adata.X.compute()
    return adata


def run_quietly(adata, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return recall(adata.copy(), progress=False, **options)


#: Variable genes of the simulations of ``--parts null`` (of 1,500 genes).
NULL_HVG = 1000
#: The R package's null, for ``--parts pbmc-r``: what the consensus test changes there.
R_NULL = {"null_method": "zip", "depth": "none"}


def pbmc_part(
    draw_counts: list[int], results_file: Path, options: dict | None = None, plotted: bool = True
) -> str:
    """Outer seeds 0-9 at each M of ``draw_counts``; M measured earlier are kept in
    ``results_file``, so the table and the plot cover every M measured so far."""
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    adata = pbmc_counts()
    for m in draw_counts:
        start = time.perf_counter()
        done = [run_quietly(adata, seed=s, draws=m, **(options or {})) for s in OUTER_SEEDS]
        runs = [result.obs["recall"] for result in done]
        results[str(m)] = {
            "counts": [labels.nunique() for labels in runs],
            "ari": [adjusted_rand_score(a, b) for a, b in combinations(runs, 2)],
            "seconds": (time.perf_counter() - start) / len(runs),
            "support": [_least_support(result.uns["recall"]) for result in done],
            "merges": [_merges(result.uns["recall"]) for result in done],
        }
        results_file.write_text(json.dumps(results, indent=1))
        print(m, results[str(m)]["counts"], flush=True)
    spread = {int(m): (r["counts"], r["ari"]) for m, r in results.items()}
    if plotted:
        plot(spread)
    rows = []
    for m in sorted(spread):
        counts, ari = spread[m]
        modal, n_modal = Counter(counts).most_common(1)[0]
        support = results[str(m)].get("support")
        passing = (
            "" if support is None else f"{min(support):.1f} / {sum(results[str(m)]['merges'])}"
        )
        rows.append(
            f"| {m} | {' '.join(map(str, counts))} | {n_modal} of {len(counts)} at {modal} | "
            f"{statistics.median(ari):.2f} | {min(ari):.2f} | {passing} | "
            f"{results[str(m)]['seconds']:.0f} |"
        )
    return "\n".join(
        [
            "| draws M | clusters, outer seeds 0-9 | same count | median ARI between seeds "
            "| min ARI | least pair support / merges | s per run (in process) |",
            "|---:|---|---|---:|---:|---:|---:|",
            *rows,
            "",
            *([f"![cluster counts and agreement against draws]({PLOT})", ""] if plotted else []),
        ]
    )


#: Random starts of each clustering (``--louvain-starts``) that ``--parts starts`` compares
#: with Seurat's 10, at 10 draws.
FEWER_STARTS = (1, 3)


def starts_part(data_dir: Path) -> str:
    """PBMC 3k with 10 draws, outer seeds 0-9, at each of :data:`FEWER_STARTS` random starts
    per clustering; Seurat's 10 starts are the 10-draw row of ``--parts pbmc``."""
    tables = []
    for starts in FEWER_STARTS:
        results = data_dir / f"stability_pbmc_starts{starts}.json"
        table = pbmc_part([10], results, {"louvain_starts": starts}, plotted=False)
        tables.append(f"`--louvain-starts {starts}`:\n\n{table}")
    return "\n".join(tables)


def _least_support(record: dict) -> float:
    """The smallest fraction of draws that select a gene for a pair of final clusters (1 for
    one draw or one cluster: no pair fails)."""
    stability = record.get("stability")
    if stability is None or record["n_clusters"] == 1:
        return 1.0
    support = np.asarray(stability["pair_support"])
    return float(support[~np.eye(support.shape[0], dtype=bool)].min())


def _merges(record: dict) -> int:
    """Consensus pairs merged because too few draws told them apart."""
    stability = record.get("stability")
    return 0 if stability is None else len(stability["merges"]["cells_a"])


def plot(spread: dict[int, tuple[list[int], list[float]]]) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    draws = sorted(spread)
    left.boxplot([spread[m][0] for m in draws], tick_labels=[str(m) for m in draws])
    left.set(xlabel="draws M", ylabel="clusters over outer seeds 0-9", title="PBMC 3k")
    right.boxplot([spread[m][1] for m in draws], tick_labels=[str(m) for m in draws])
    right.set(xlabel="draws M", ylabel="ARI between two outer seeds", ylim=(0, 1.02))
    figure.savefig(PAGE.parent / PLOT, dpi=110)


def null_part(n_seeds: int) -> str:
    """1,000 of the 1,500 genes variable (``NULL_HVG``): with all of them variable, each
    cell's depth would come from the variable genes themselves (a warning)."""
    population = simulate(2000, 1500, 1, seed=11, log_mean=-1.0)
    single = [
        run_quietly(population, seed=s, n_hvg=NULL_HVG).obs["recall"].nunique()
        for s in range(n_seeds)
    ]
    print("single draws:", single, flush=True)
    majority = [
        run_quietly(population, seed=s, draws=10, n_hvg=NULL_HVG).obs["recall"].nunique()
        for s in range(n_seeds)
    ]
    print("majority of 10:", majority, flush=True)
    groups = simulate(1500, 1500, 5, seed=1, de_prob=0.1, log_mean=-1.0)
    five = [run_quietly(groups, seed=s, draws=10, n_hvg=NULL_HVG) for s in range(3)]
    truth = group_labels(1500, 5)
    return "\n".join(
        [
            "| data | draws | outer seeds | split (more than 1 cluster) | clusters |",
            "|---|---:|---:|---:|---|",
            f"| one population, 2,000 cells | 1 | {n_seeds} | {sum(k > 1 for k in single)} | "
            f"{dict(sorted(Counter(single).items()))} |",
            f"| one population, 2,000 cells | 10 | {n_seeds} | {sum(k > 1 for k in majority)} | "
            f"{dict(sorted(Counter(majority).items()))} |",
            "",
            "Five simulated groups (1,500 cells), 10 draws, outer seeds 0-2: "
            + ", ".join(
                f"{r.obs['recall'].nunique()} clusters (ARI "
                f"{adjusted_rand_score(truth, r.obs['recall']):.3f})"
                for r in five
            )
            + ".",
            "",
        ]
    )


def measured_run(source: Path, draws: int, work: Path, stages: bool = False) -> str:
    """``recall-dask run`` in a fresh process: wall, peak GiB, clusters, iterations and, with
    ``stages``, the seconds of the stages that each draw repeats."""
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        out = Path(tmp) / "out.zarr"
        command = [*CLI, "run", str(source), "-o", str(out), "--work-dir", tmp, "--quiet"]
        wall, peak = run_measured([*command, "--draws", str(draws)])
        record = io.read_results(out).uns["recall"]
    cells = f"{wall:.0f} s | {peak:.2f} | {record['n_clusters']} | {record['n_iterations']}"
    if stages:
        timed = record["stage_seconds"]
        seconds = dict(zip(timed["stage"], timed["seconds"], strict=True))
        cells += " | " + " / ".join(f"{seconds[name]:.0f}" for name in DRAW_STAGES)
    return cells


def cost_part(work: Path) -> str:
    lines = ["| data | draws | wall, process start to labels | peak GiB | clusters | iter. |"]
    lines.append("|---|---:|---:|---:|---:|---:|")
    for draws in (1, 10):
        result = measured_run(io.BUNDLED_PBMC3K, draws, work)
        lines.append(f"| PBMC 3k | {draws} | {result} |")
        print(lines[-1], flush=True)
    return "\n".join([*lines, ""])


def scale_part(data_dir: Path) -> str:
    """The runs one by one, each written to the manual's page as soon as it is measured."""
    lines = [
        "| data | draws | wall | peak GiB | clusters | iter. "
        "| augment / PCA / graph / calibration, s |"
    ]
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    sparse = simulated_h5(data_dir, 200_000, 20_000, 8)
    deep = data_dir / "sim_200000x20000_8groups_deep.h5"
    if not deep.exists():
        sizes = ["--cells", "200000", "--genes", "20000", "--groups", "8"]
        depth = ["--log-mean", str(DEEP_LOG_MEAN)]
        run_measured([*CLI, "simulate", "-o", str(deep), *sizes, *depth, "--quiet"])
    runs = [
        ("200k cells, ~1,000 genes per cell", sparse, 1),
        ("200k cells, ~1,000 genes per cell", sparse, 10),
        ("200k cells, ~4,900 genes per cell", deep, 1),
    ]
    for data, source, draws in runs:
        result = measured_run(source, draws, data_dir, stages=True)
        lines.append(f"| {data} | {draws} | {result} |")
        print(lines[-1], flush=True)
        replace_readme_section(PAGE, "stability-scale", "\n".join([*lines, ""]))
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["pbmc", "null", "cost", "scale"])
    parser.add_argument("--draws", type=int, nargs="+", default=[1, 3, 5, 10, 20])
    parser.add_argument("--null-seeds", type=int, default=50)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks" / "out")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    parts = {
        "pbmc": lambda: pbmc_part(args.draws, args.data_dir / "stability_pbmc.json"),
        "pbmc-r": lambda: pbmc_part(
            args.draws, args.data_dir / "stability_pbmc_r.json", R_NULL, plotted=False
        ),
        "starts": lambda: starts_part(args.data_dir),
        "null": lambda: null_part(args.null_seeds),
        "cost": lambda: cost_part(args.data_dir),
        "scale": lambda: scale_part(args.data_dir),
    }
    for name in args.parts:
        text = parts[name]()
        print(text, flush=True)
        replace_readme_section(PAGE, f"stability-{name}", text)


if __name__ == "__main__":
    main()
