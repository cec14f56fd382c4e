"""Parity with R on PBMC 3k, as distributions over seeds, and stage by stage on R's own draws.

For seeds 1..N it runs the recall procedure in R (``benchmarks/r/recall_seurat.R``: Seurat
4.3 with limma, FindClustersRecall's steps) and ours (``recall-dask run``) with each neighbor
search, each in a fresh process, timed with the peak memory of its process tree. Then:

* the cluster count per seed, and the ARI against the Seurat tutorial's annotation;
* the ARI between runs: ours against R's (every pair of seeds), R against R and ours against
  ours (pairs of different seeds), as median and range;
* the plain clustering (no artificial genes) against R's ``default_cluster``;
* R's artificial genes of each seed fed through our stages, compared with what R computed
  from them: variable genes, PCA, neighbors, the clusters and pair decision of every
  iteration, and the final clusters; the first stage that differs is reported with numbers.

The table goes into the manual (docs/benchmarks/parity.md); ``--vendor`` also writes R's
per-seed labels to the bundled ``r_recall_by_seed.csv``, which the quality tests read. R's
outputs are kept under ``--out`` and reused with ``--reuse-r``. Without ``Rscript`` it says so
in one line and stops.

    python benchmarks/r_parity.py --seeds 10 [--reuse-r] [--vendor]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations, product
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from _measure import replace_readme_section, run_measured
from sklearn.metrics import adjusted_rand_score

from recall_dask import io
from recall_dask.calibrate import calibrate
from recall_dask.draw import embedding
from recall_dask.graph import NEIGHBOR_SEARCHES, nearest_neighbors, shared_nearest_neighbors
from recall_dask.methods.recall import selected_gene_counts
from recall_dask.params import RecallParams
from recall_dask.preprocess import column_moments, log_normalize, select_variable_genes
from recall_dask.progress import reporting
from recall_dask.report import default_clusters

ROOT = Path(__file__).resolve().parent.parent
#: The manual's page that holds this script's tables, between their markers.
PAGE = ROOT / "docs" / "benchmarks" / "parity.md"
R_SCRIPT = ROOT / "benchmarks" / "r" / "recall_seurat.R"
SEARCHES = tuple(NEIGHBOR_SEARCHES)
#: The R package's calibration: its ZIP null, fitted alike for every cell (our defaults are
#: the NB null with each cell's depth; docs/explanation/depth.md).
R_COMPATIBLE = ["--null-method", "zip", "--depth", "none"]


def run_r(seed: int, out: Path, reuse: bool) -> dict[str, float]:
    """R's procedure for one seed, or its earlier outputs; seconds and peak GiB."""
    timing = out / "timing.txt"
    if not (reuse and timing.exists()):
        shutil.rmtree(out, ignore_errors=True)
        wall, peak = run_measured(
            ["Rscript", str(R_SCRIPT), str(io.BUNDLED_PBMC3K), str(seed), str(out)]
        )
        timing.write_text(f"{wall} {peak}\n")
    wall, peak = map(float, timing.read_text().split())
    return {"seconds": wall, "peak": peak}


def run_ours(seed: int, search: str, out: Path) -> dict[str, object]:
    """``recall-dask run`` on the bundled data in a fresh process, as a user runs it, with the
    R package's null (:data:`R_COMPATIBLE`)."""
    store, labels_csv = out / f"{search}-seed{seed}.zarr", out / f"{search}-seed{seed}.csv"
    command = [sys.executable, "-m", "recall_dask", "run", str(io.BUNDLED_PBMC3K), "-o", str(store)]
    command += ["--seed", str(seed), "--neighbors", search, "--labels-csv", str(labels_csv)]
    command += R_COMPATIBLE
    wall, peak = run_measured([*command, "--quiet"])
    record = io.read_results(store).uns["recall"]
    trace = [record["iterations"][str(i)]["n_clusters"] for i in range(record["n_iterations"])]
    labels = pd.read_csv(labels_csv, index_col="barcode")["cluster"]
    return {"seconds": wall, "peak": peak, "labels": labels, "trace": trace, "store": store}


def r_labels(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "labels.csv", index_col="barcode")


def r_trace(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "iterations.tsv", sep="\t", keep_default_na=False)


# -- R's draws through our stages --------------------------------------------------------


def first_difference(r_out: Path, counts: sp.csr_matrix, var: pd.DataFrame, search: str) -> str:
    """Feed R's artificial genes to our stages and name the first stage whose result differs
    from R's, with numbers; "none" if every stage agrees down to the final clusters."""
    params = RecallParams(neighbors=search, null_method="zip", depth="none")
    genes = np.loadtxt(r_out / "variable_genes.txt", dtype=np.int64)
    x = da.from_array(counts, chunks=(2048, -1), asarray=False)
    ours = select_variable_genes(x, var, params.n_hvg, column_moments(x).compute())
    if set(ours) != set(genes):
        return f"variable genes: {len(set(ours) ^ set(genes)) // 2} of {genes.size} differ"
    draws = sp.csr_matrix(scipy.io.mmread(r_out / "draws.mtx").T)
    augmented = log_normalize(sp.hstack([counts[:, genes], draws], format="csr"), params.target_sum)
    data = da.from_array(augmented, chunks=(2048, -1), asarray=False)
    pcs = embedding(data, params).compute()
    theirs = np.loadtxt(r_out / "embedding.tsv")[:, : params.dims]
    signs = np.sign(np.sum(pcs[:, : params.dims] * theirs, axis=0))
    gap = np.abs(pcs[:, : params.dims] * signs - theirs).max()
    if gap > 1e-6:
        return f"PCA: embeddings differ by up to {gap:.2g}"
    knn = nearest_neighbors(pcs[:, : params.dims], params.k_neighbors, search)
    r_knn = np.loadtxt(r_out / "neighbors.tsv", dtype=np.int64)
    same = (knn == r_knn).all(axis=1)
    if not same.all():
        shared = np.mean([len(set(a) & set(b)) for a, b in zip(knn, r_knn, strict=True)])
        return (
            f"neighbors: {same.mean():.1%} of the lists identical, "
            f"{shared / params.k_neighbors:.1%} of the neighbors shared"
        )
    tiles = data.rechunk({1: 1024})
    iterations = calibrate(
        shared_nearest_neighbors(knn, params.snn_prune),
        lambda labels: selected_gene_counts(tiles, labels, genes.size, params.fdr),
        params,
    )
    r_iterations = r_trace(r_out)
    r_steps = r_iterations.itertuples(index=False)
    for number, (ours_it, r_it) in enumerate(zip(iterations, r_steps, strict=False), 1):
        r_clusters = np.loadtxt(r_out / f"clusters_{number}.txt", dtype=np.int64)
        if not np.array_equal(pd.factorize(ours_it.labels)[0], pd.factorize(r_clusters)[0]):
            ari = adjusted_rand_score(r_clusters, ours_it.labels)
            return (
                f"clusters of iteration {number} (resolution {r_it.resolution:.3g}): ARI {ari:.3f}"
            )
        ours_id = dict(zip(r_clusters.tolist(), ours_it.labels.tolist(), strict=False))
        r_pair = sorted(ours_id[int(c)] for c in r_it.failing.split())
        ours_pair = sorted(ours_it.failing_pair or ())
        if ours_pair != r_pair:
            return (
                f"pair tests of iteration {number}: R {_decision(r_pair)}, "
                f"ours {_decision(ours_pair)}"
            )
    if len(iterations) != len(r_iterations):
        return f"iterations: R {len(r_iterations)}, ours {len(iterations)}"
    return "none"


def _decision(pair: list[int]) -> str:
    return f"rejects (pair {pair[0]}-{pair[1]} selects nothing)" if pair else "accepts"


# -- summary -----------------------------------------------------------------------------


def spread(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    low, mid, high = (
        f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values))
    )
    return f"{mid} ({low}-{high})"


def between(runs: list[pd.Series], others: list[pd.Series] | None = None) -> list[float]:
    """ARI of every pair of runs: within ``runs`` (different seeds), or across the two lists."""
    pairs = combinations(runs, 2) if others is None else product(runs, others)
    return [adjusted_rand_score(a, b.loc[a.index]) for a, b in pairs]


def _trace(labels: pd.Series, trace: list[int]) -> str:
    return f"{labels.nunique()} ({' > '.join(map(str, trace))})"


def table(seeds, r_runs, ours, tutorial, plain, stages) -> str:
    """The page's section: per seed, then the distributions and the verdicts."""
    lines = [
        "| seed | R: clusters (per iteration) | ours, annoy | ours, exact | ARI vs tutorial: "
        "R / annoy / exact | R's draws through our stages: first difference, annoy / exact |",
        "|---:|---|---|---|---|---|",
    ]

    def vs_tutorial(labels: pd.Series) -> float:
        return adjusted_rand_score(tutorial, labels.loc[tutorial.index])

    for seed in seeds:
        runs = [r_runs[seed]] + [ours[search][seed] for search in SEARCHES]
        cells = [_trace(run["labels"], run["trace"]) for run in runs]
        cells.append(" / ".join(f"{vs_tutorial(run['labels']):.3f}" for run in runs))
        cells.append(" / ".join(stages[search][seed] for search in SEARCHES))
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    r_all = [r_runs[s]["labels"] for s in seeds]
    r_counts = [lab.nunique() for lab in r_all]
    lines += ["", "| over seeds | R | ours, annoy | ours, exact |", "|---|---|---|---|"]
    rows = {
        "clusters, median (range)": [
            f"{statistics.median(r_counts):g} ({min(r_counts)}-{max(r_counts)})"
        ],
        "ARI vs tutorial, median (range)": [spread([vs_tutorial(x) for x in r_all])],
        "ARI vs R's runs, median (range)": [spread(between(r_all))],
        "ARI vs own runs of other seeds, median (range)": [spread(between(r_all))],
        "plain clustering: ARI vs R's default_cluster": ["-"],
        "seconds per run, median (range)": [spread([r_runs[s]["seconds"] for s in seeds], 0)],
        "peak GiB of all processes, median (range)": [spread([r_runs[s]["peak"] for s in seeds])],
    }
    verdicts = []
    for search in SEARCHES:
        runs = [ours[search][s]["labels"] for s in seeds]
        counts = [lab.nunique() for lab in runs]
        vs_r, r_r = between(runs, r_all), between(r_all)
        rows["clusters, median (range)"].append(
            f"{statistics.median(counts):g} ({min(counts)}-{max(counts)})"
        )
        rows["ARI vs tutorial, median (range)"].append(spread([vs_tutorial(x) for x in runs]))
        rows["ARI vs R's runs, median (range)"].append(spread(vs_r))
        rows["ARI vs own runs of other seeds, median (range)"].append(spread(between(runs)))
        rows["plain clustering: ARI vs R's default_cluster"].append(f"{plain[search]:.3f}")
        rows["seconds per run, median (range)"].append(
            spread([ours[search][s]["seconds"] for s in seeds], 0)
        )
        rows["peak GiB of all processes, median (range)"].append(
            spread([ours[search][s]["peak"] for s in seeds])
        )
        count_gap = abs(statistics.median(counts) - statistics.median(r_counts))
        ratio = statistics.median(vs_r) / statistics.median(r_r)
        identical = sum(stages[search][s] == "none" for s in seeds)
        within = "within" if count_gap <= 1 else "NOT within"
        verdicts.append(
            f"- **{search}**: median cluster count {within} 1 "
            f"of R's (difference {count_gap:g}); median ARI ours-vs-R is {ratio:.2f} x R-vs-R "
            f"({'met' if ratio >= 0.9 else 'missed'}: target 0.9). Fed R's draws, our stages "
            f"repeat R's run exactly for {identical} of {len(seeds)} seeds."
        )
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    return "\n".join([*lines, "", *verdicts, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 1..N (default 10)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "r_parity")
    parser.add_argument("--reuse-r", action="store_true", help="reuse R's outputs under --out")
    parser.add_argument(
        "--vendor", action="store_true", help="write R's labels to the package data"
    )
    parser.add_argument(
        "--r-jobs", type=int, default=1, help="R runs at a time (R uses one core; default 1)"
    )
    args = parser.parse_args()
    if shutil.which("Rscript") is None:
        print("r_parity: Rscript not found (see ../shared/reference/README.md); skipped")
        return
    seeds = list(range(1, args.seeds + 1))
    r_dirs = {seed: args.out / "r" / f"seed{seed}" for seed in seeds}
    with ThreadPoolExecutor(args.r_jobs) as pool:  # R runs on one core
        timings = pool.map(lambda seed: run_r(seed, r_dirs[seed], args.reuse_r), seeds)
        r_runs = dict(zip(seeds, timings, strict=True))
    for seed, run in r_runs.items():
        run["labels"] = r_labels(r_dirs[seed])["recall_cluster"]
        run["trace"] = r_trace(r_dirs[seed])["clusters"].tolist()
        print(f"R seed {seed}: {run['trace']} in {run['seconds']:.0f} s", flush=True)
    ours: dict[str, dict[int, dict]] = {search: {} for search in SEARCHES}
    (args.out / "ours").mkdir(parents=True, exist_ok=True)
    for search, seed in product(SEARCHES, seeds):
        ours[search][seed] = run_ours(seed, search, args.out / "ours")
        print(f"ours {search} seed {seed}: {ours[search][seed]['trace']}", flush=True)
    counts_store = ours["annoy"][seeds[0]]["store"]
    adata = io.open_counts(counts_store)
    counts = adata.X.compute()
    variable = io.read_results(counts_store).uns["recall"]["variable_genes"]
    r_default = r_labels(args.out / "r" / f"seed{seeds[0]}")["default_cluster"]
    plain = {}
    stages: dict[str, dict[int, str]] = {search: {} for search in SEARCHES}
    with reporting(False):
        for search in SEARCHES:
            params = RecallParams(neighbors=search)
            labels = default_clusters(adata.X, adata.var, variable, params)
            plain[search] = adjusted_rand_score(r_default, labels)
            for seed in seeds:
                stages[search][seed] = first_difference(
                    args.out / "r" / f"seed{seed}", counts, adata.var, search
                )
                print(
                    f"R's draws of seed {seed}, {search}: first difference: {stages[search][seed]}",
                    flush=True,
                )
    tutorial = pd.read_csv(io.BUNDLED_PBMC3K / "labels.csv", index_col="barcode")["label"].dropna()
    text = table(seeds, r_runs, ours, tutorial, plain, stages)
    print(text)
    replace_readme_section(PAGE, "r-parity", text)
    if args.vendor:
        columns = {"default_cluster": r_default}
        columns |= {f"recall_seed{s}": r_runs[s]["labels"] for s in seeds}
        pd.DataFrame(columns).rename_axis("barcode").to_csv(
            io.BUNDLED_PBMC3K / "r_recall_by_seed.csv"
        )


if __name__ == "__main__":
    main()
