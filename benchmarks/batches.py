"""Batches: what ``--batch-key`` changes, measured (issue 25).

Parts (``--parts``, all by default):

* ``mixology``: sc_mixology (five lung cancer cell lines called from genotype, on five plates
  and two protocols) with ``--batch-key batch``: clusters, the least purity of a cluster (the
  share of its most common cell line) and the ARI against the cell lines, for seeds 1-5 with
  one draw and for outer seeds 0-2 with ``--draws 10``; both pair tests (``--batch-test
  pooled`` and ``within``) and the batch-blind answer beside them.
* ``simulated``: one population over 3 batches (batch fold changes on 10% of genes, one batch
  at 1.5x depth; 2,000 cells x 4,000 genes), clusters over seeds 1-20 with one draw (both pair
  tests) and over seeds 1-10 with ``--draws 10`` (the default pair test); 6 types over 4
  batches of unequal composition, one type missing from one batch and one found in one batch
  only (3,000 cells x 4,000 genes, at the default depth and with 7x the counts), clusters,
  ARI and whether the one-batch type keeps a cluster of its own, seeds 1-5.
* ``cost``: 200k and 1M simulated cells in 8 batches (AnnData Zarr with ``obs['batch']``), the
  batch-blind run and the run with ``--batch-key batch`` one after the other in fresh processes:
  wall, peak memory of all processes, and Harmony's share (its seconds over the wall time).

Runs accumulate in ``DATA_DIR/batches.json`` (a run already there is not repeated); the tables
go into docs/benchmarks/batches.md.

    python benchmarks/batches.py [--parts mixology simulated cost] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _measure import replace_readme_section, run_measured
from scale import CLI
from sklearn.metrics import adjusted_rand_score

from recall_dask import io, recall
from recall_dask.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
#: The manual's page that holds this script's tables, between their markers.
PAGE = ROOT / "docs" / "benchmarks" / "batches.md"
MIXOLOGY = ROOT.parent / "shared" / "data" / "sc_mixology" / "sc_mixology.h5ad"
#: The settings compared: batch-blind, and --batch-key with each pair test.
SETTINGS = {
    "blind": {},
    "pooled": {"batch_key": "batch", "batch_test": "pooled"},
    "within": {"batch_key": "batch", "batch_test": "within"},
}
POPULATION = {"n_cells": 2000, "n_genes": 4000, "n_groups": 1, "batches": 3,
              "batch_depth": [1.0, 1.5, 1.0]}  # fmt: skip
#: Six types over four batches: type 5 is missing from batch 0, type 4 lives in batch 3 only.
COMPOSITION = [[1, 1, 1, 1, 0, 0], [2, 1, 1, 1, 0, 1], [1, 3, 1, 1, 0, 1], [1, 1, 2, 1, 1, 1]]
SIX_TYPES = {"n_cells": 3000, "n_genes": 4000, "n_groups": 6, "batches": 4,
             "batch_depth": [1.0, 1.5, 0.8, 1.2],
             "composition": np.array(COMPOSITION, dtype=float)}  # fmt: skip
ALONE = "4"  # the type of SIX_TYPES found in one batch only
#: The six types at the default depth (sparse, ~1,000 genes per cell) and with 7x the counts.
SIX_TYPE_DEPTHS = {"default depth": {}, "log mean -2": {"log_mean": -2.0}}


def clustered(data: ad.AnnData, truth: str, options: dict[str, object]) -> dict[str, object]:
    """One in-process run: clusters, ARI against ``truth``, each cluster's purity, and
    whether the cells of type ``ALONE`` (if any) make a cluster of their own."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = recall(data.copy(), progress=False, **options)
    labels = result.obs["recall"].astype(str).to_numpy()
    truth_labels = data.obs[truth].astype(str).to_numpy()
    table = pd.crosstab(labels, truth_labels)
    purity = (table.max(axis=1) / table.sum(axis=1)).to_numpy()
    alone = truth_labels == ALONE
    return {
        "clusters": int(result.uns["recall"]["n_clusters"]),
        "ari": float(adjusted_rand_score(truth_labels, labels)),
        "purity": float(purity.min()),
        "alone_kept": bool(alone.any() and set(labels[alone]).isdisjoint(labels[~alone])),
        "seconds": time.perf_counter() - start,
    }


def measured(results: dict, results_file: Path, key: str, run: Callable[[], dict]) -> dict:
    """The run ``key`` from ``results``, or run now and saved."""
    if key not in results:
        results[key] = run()
        results_file.write_text(json.dumps(results, indent=1))
        print(key, results[key], flush=True)
    return results[key]


def mixology_part(results: dict, results_file: Path) -> str:
    data = ad.read_h5ad(MIXOLOGY)
    rows = []
    for setting, options in SETTINGS.items():
        for draws, seeds in ((1, range(1, 6)), (10, range(3))):
            runs = [
                measured(
                    results,
                    results_file,
                    f"mixology|{setting}|{draws}|{seed}",
                    lambda o=options, d=draws, s=seed: clustered(
                        data, "cell_line", {**o, "draws": d, "seed": s}
                    ),
                )
                for seed in seeds
            ]
            rows.append(_mixology_row(setting, draws, list(seeds), runs))
    header = [
        "| setting | draws | seeds | clusters | least purity | ARI | seeds meeting the target |",
        "|---|---:|---|---|---|---|---:|",
    ]
    return "\n".join([*header, *rows, ""])


def _mixology_row(setting: str, draws: int, seeds: list[int], runs: list[dict]) -> str:
    """Target: at most 6 clusters, each at least 98% one cell line, ARI at least 0.85."""
    met = sum(r["clusters"] <= 6 and r["purity"] >= 0.98 and r["ari"] >= 0.85 for r in runs)
    return (
        f"| {_setting_name(setting)} | {draws} | {seeds[0]}-{seeds[-1]} | "
        f"{_listed(runs, 'clusters', 'd')} | {_listed(runs, 'purity', '.3f')} | "
        f"{_listed(runs, 'ari', '.2f')} | {met} of {len(runs)} |"
    )


def _listed(runs: list[dict], name: str, spec: str) -> str:
    return " ".join(format(r[name], spec) for r in runs)


def _setting_name(setting: str) -> str:
    return "batch-blind" if setting == "blind" else f"`--batch-key batch --batch-test {setting}`"


def simulated_part(results: dict, results_file: Path) -> str:
    rows = []
    plans = [("blind", 1, range(1, 6)), ("pooled", 1, range(1, 21)), ("within", 1, range(1, 21))]
    plans += [("pooled", 10, range(1, 11))]
    for setting, draws, seeds in plans:
        runs = [
            measured(
                results,
                results_file,
                f"population|{setting}|{draws}|{seed}",
                lambda s=seed, o=SETTINGS[setting], d=draws: clustered(
                    simulate(**POPULATION, seed=s), "group", {**o, "draws": d, "seed": s}
                ),
            )
            for seed in seeds
        ]
        one = sum(r["clusters"] == 1 for r in runs)
        counts = _listed(runs, "clusters", "d")
        rows.append(
            f"| one population, 3 batches | {_setting_name(setting)} | {draws} | "
            f"{seeds[0]}-{seeds[-1]} | {counts} | {one} of {len(runs)} at 1 | |"
        )
    for depth, extra in SIX_TYPE_DEPTHS.items():
        for setting in SETTINGS:
            rows.append(_six_types_row(results, results_file, depth, extra, setting))
    header = [
        "| data | setting | draws | seeds | clusters | target | one-batch type kept |",
        "|---|---|---:|---|---|---|---:|",
    ]
    return "\n".join([*header, *rows, ""])


def _six_types_row(results: dict, results_file: Path, depth: str, extra: dict, setting: str) -> str:
    prefix = "six" if not extra else f"six {depth}"
    runs = [
        measured(
            results,
            results_file,
            f"{prefix}|{setting}|{seed}",
            lambda s=seed, o=SETTINGS[setting]: clustered(
                simulate(**SIX_TYPES, **extra, seed=s), "group", {**o, "seed": s}
            ),
        )
        for seed in range(1, 6)
    ]
    counts, aris = _listed(runs, "clusters", "d"), _listed(runs, "ari", ".2f")
    kept = sum(r["alone_kept"] for r in runs)
    six = sum(r["clusters"] == 6 and r["ari"] >= 0.95 for r in runs)
    return (
        f"| 6 types, 4 batches, {depth} | {_setting_name(setting)} | 1 | 1-5 | {counts} "
        f"(ARI {aris}) | {six} of 5 at 6 with ARI >= 0.95 | {kept} of 5 |"
    )


def simulated_store(data_dir: Path, n_cells: int) -> Path:
    """Simulated cells in 8 batches (depths 0.8-1.5), 20,000 genes, 8 types, as Zarr."""
    path = data_dir / f"sim_{n_cells}x20000_8groups_8batches.zarr"
    if not path.exists():
        sizes = ["--cells", str(n_cells), "--genes", "20000", "--groups", "8"]
        batches = ["--batches", "8", "--batch-depth", "1", "1.5", "0.8", "1.2", "1", "0.9",
                   "1.3", "1.1"]  # fmt: skip
        run_measured([*CLI, "simulate", "-o", str(path), *sizes, *batches, "--quiet"])
    return path


def cost_part(results: dict, results_file: Path, data_dir: Path, sizes: list[int]) -> str:
    rows = []
    for n_cells in sizes:
        source = simulated_store(data_dir, n_cells)
        runs = {
            setting: measured(
                results,
                results_file,
                f"cost|{n_cells}|{setting}",
                lambda o=options, s=source: _measured_run(s, data_dir, o),
            )
            for setting, options in (("blind", []), ("batches", ["--batch-key", "batch"]))
        }
        blind, batched = runs["blind"], runs["batches"]
        harmony = batched["stages"].get("Harmony")  # runs before commit b599f91 lack it
        share = (
            "not timed"
            if harmony is None
            else f"{harmony:.0f} s ({100 * harmony / batched['wall']:.1f}%)"
        )
        rows.append(
            f"| {n_cells:,} | {blind['wall']:.0f} s | {batched['wall']:.0f} s | "
            f"{batched['wall'] / blind['wall']:.2f} | {blind['peak']:.2f} | "
            f"{batched['peak']:.2f} | {blind['clusters']} / {batched['clusters']} | "
            f"{blind['stages']['calibration']:.0f} s / {batched['stages']['calibration']:.0f} s | "
            f"{share} |"
        )
    header = [
        "| cells | batch-blind | `--batch-key` | ratio | peak GiB, blind | peak GiB, batches "
        "| clusters, blind / batches | calibration, blind / batches | Harmony (its share) |",
        "|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    return "\n".join([*header, *rows, ""])


def _measured_run(source: Path, data_dir: Path, options: list[str]) -> dict:
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        out = Path(tmp) / "out.zarr"
        command = [*CLI, "run", str(source), "-o", str(out), "--work-dir", tmp, "--quiet"]
        wall, peak = run_measured([*command, *options])
        record = io.read_results(out).uns["recall"]
    stages = dict(zip(record["stage_seconds"]["stage"], record["stage_seconds"]["seconds"],
                      strict=True))  # fmt: skip
    return {"wall": wall, "peak": peak, "clusters": int(record["n_clusters"]),
            "iterations": int(record["n_iterations"]),
            "stages": {k: float(v) for k, v in stages.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["mixology", "simulated", "cost"])
    parser.add_argument("--cost-cells", nargs="+", type=int, default=[200_000, 1_000_000])
    parser.add_argument("--data-dir", type=Path, default=Path("bench-data"))
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    results_file = args.data_dir / "batches.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    parts = {
        "mixology": lambda: mixology_part(results, results_file),
        "simulated": lambda: simulated_part(results, results_file),
        "cost": lambda: cost_part(results, results_file, args.data_dir, args.cost_cells),
    }
    for name in args.parts:
        table = parts[name]()
        print(table, flush=True)
        replace_readme_section(PAGE, f"batches-{name}", table)


if __name__ == "__main__":
    main()
