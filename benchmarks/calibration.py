"""Type I error and power of every calibration, with the sequencing depth of cells varying as
in real data; and what the depth-aware defaults change on PBMC 3k and sc_mixology.

Simulated data (``recall_dask.simulate``): negative binomial counts (size 5), each cell's
mean scaled by a log-normal size factor whose log has sd 0 to 0.8 (real data: 0.4 to 0.6).
"Sparse": 2,000 cells x 10,000 genes, log mean -4 (about 2,600 UMIs and 900 genes per cell).
"Dense": 1,500 cells x 4,000 genes, log mean -2 (about 7,600 UMIs and 1,900 genes per cell),
where the highly expressed genes have hundreds of counts and the groups also differ in library
size (their composition). "Very dense": 1,500 cells x 1,500 genes, log mean -1 (about 7,800
UMIs per cell, most genes in most cells), 500 variable genes (``tests/test_methods.py``'s
data). Every run is
in process, one draw, seed = simulation seed.

* ``type1``: one sparse homogeneous population; how many seeds end with more than one
  cluster. The default, R's null (``--null-method zip --depth none``) and the ZIP with depth
  at sd 0, 0.4, 0.6 and 0.8 over 50 seeds; every other null method and count splitting
  (Poisson and NB), each with and without depth, at sd 0.6 over 20 seeds.
* ``power``: five groups (10% of genes differentially expressed per group), sparse, dense and
  very dense, at the same depth spreads, 5 seeds, for every calibration that passed the type
  I error target at sd 0.6: clusters and ARI against the groups.
* ``real``: PBMC 3k (seeds 0-4, ARI against the Seurat tutorial's annotation) and sc_mixology
  within each protocol (seeds 1-5, ARI against the cell lines called from genotype), with
  R's settings and with the defaults.

Results accumulate in ``DATA_DIR/calibration.json`` (a run already there is not repeated);
the tables go into docs/benchmarks/calibration.md.

    python benchmarks/calibration.py [--parts type1 power real] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import anndata as ad
import pandas as pd
from _measure import replace_readme_section
from sklearn.metrics import adjusted_rand_score
from stability import pbmc_counts

from recall_dask import io, recall
from recall_dask.choices import NULL_METHODS
from recall_dask.errors import CalibrationError
from recall_dask.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
#: The manual's page that holds this script's tables, between their markers.
PAGE = ROOT / "docs" / "benchmarks" / "calibration.md"
SHARED = ROOT.parent / "shared" / "data"
#: cells, genes, log mean expression and variable genes of each kind of simulated data
SHAPES = {
    "sparse": (2000, 10_000, -4.0, 2000),
    "dense": (1500, 4000, -2.0, 2000),
    "very dense": (1500, 1500, -1.0, 500),
}
DEPTH_SDS = (0.0, 0.4, 0.6, 0.8)
#: The R package's settings of each calibration, to set beside ours.
R_SETTINGS = {"null_method": "zip", "depth": "none", "split": "poisson"}


def configurations() -> dict[str, dict[str, object]]:
    """Every calibration offered: label -> options of ``recall``."""
    configs: dict[str, dict[str, object]] = {}
    for null in NULL_METHODS:
        for depth in ("cell", "none"):
            configs[f"recall {null}, depth {depth}"] = {"null_method": null, "depth": depth}
    for split in ("nb", "poisson"):
        for depth in ("cell", "none"):
            configs[f"countsplit {split}, depth {depth}"] = {
                "method": "countsplit",
                "split": split,
                "depth": depth,
            }
    return configs


DEFAULT = "recall nb, depth cell"
R_DEFAULT = "recall zip, depth none"
#: Measured at every depth spread over 50 seeds: the default, R's, and the ZIP with depth.
CANDIDATES = (DEFAULT, R_DEFAULT, "recall zip, depth cell")


def type1_runs() -> Iterator[tuple[str, str, float, int, int]]:
    """(configuration, data, depth sd, groups, seed) of the type I error part."""
    for sd in DEPTH_SDS:
        for label in CANDIDATES:
            for seed in range(50):
                yield label, "sparse", sd, 1, seed
    for label in configurations():
        if label not in CANDIDATES:
            for seed in range(20):
                yield label, "sparse", 0.6, 1, seed


def power_runs(labels: list[str]) -> Iterator[tuple[str, str, float, int, int]]:
    for data in SHAPES:
        for sd in DEPTH_SDS:
            for label in labels:
                for seed in range(5):
                    yield label, data, sd, 5, seed


def simulated_run(label: str, data: str, sd: float, groups: int, seed: int) -> dict[str, float]:
    cells, genes, log_mean, n_hvg = SHAPES[data]
    counts = simulate(cells, genes, groups, seed=seed, depth_sd=sd, log_mean=log_mean)
    return _clustered(counts, "group", {**configurations()[label], "seed": seed, "n_hvg": n_hvg})


def _clustered(data: ad.AnnData, truth: str, options: dict[str, object]) -> dict[str, float]:
    """One run; the ARI over the cells with a ``truth`` label, or for a run that reaches no
    calibrated clustering, ``clusters`` None."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            recall(data, progress=False, **options)
        except CalibrationError:
            return {"clusters": None, "ari": 0.0, "seconds": time.perf_counter() - start}
    known = data.obs[truth].notna().to_numpy()
    labels = data.obs["recall"].to_numpy()[known]
    return {
        "clusters": int(data.uns["recall"]["n_clusters"]),
        "ari": float(adjusted_rand_score(data.obs[truth].to_numpy()[known], labels)),
        "seconds": time.perf_counter() - start,
    }


def real_runs() -> Iterator[tuple[str, dict[str, object], int, Callable[[], ad.AnnData], str]]:
    """(data set and settings, options, seed, loader, truth column) of the real-data part."""

    def load_pbmc() -> ad.AnnData:
        data = pbmc_counts()
        labels = pd.read_csv(Path(io.BUNDLED_PBMC3K) / "labels.csv", index_col="barcode")
        data.obs["truth"] = labels["label"].reindex(data.obs_names).to_numpy()
        return data

    def load_protocol(protocol: str) -> Callable[[], ad.AnnData]:
        def load() -> ad.AnnData:
            data = ad.read_h5ad(SHARED / "sc_mixology" / "sc_mixology.h5ad")
            return data[data.obs["batch"].str.startswith(protocol)].copy()

        return load

    countsplit = {"method": "countsplit"}
    for settings in ("R", "default"):
        options = R_SETTINGS if settings == "R" else {}
        for seed in range(5):
            yield f"PBMC 3k|{settings}", options, seed, load_pbmc, "truth"
            yield (
                f"PBMC 3k, countsplit|{settings}",
                {**options, **countsplit},
                seed,
                load_pbmc,
                "truth",
            )
        for protocol in ("celseq2", "dropseq"):
            for seed in range(1, 6):
                yield (
                    f"sc_mixology {protocol}|{settings}",
                    options,
                    seed,
                    load_protocol(protocol),
                    "cell_line",
                )


def split_table(results: dict[str, dict[str, float]]) -> str:
    """Seeds split (more than one cluster) of one population, by calibration and depth sd."""
    header = "| calibration | " + " | ".join(f"sd {sd}" for sd in DEPTH_SDS) + " |"
    lines = [header, "|---|" + "---:|" * len(DEPTH_SDS)]
    for label in configurations():
        cells = []
        for sd in DEPTH_SDS:
            runs = [v for k, v in results.items() if k.startswith(f"type1|{label}|sparse|{sd}|")]
            split = sum(run["clusters"] != 1 for run in runs)
            cells.append(f"{split} of {len(runs)}" if runs else "")
        marker = " (default)" if label == DEFAULT else " (R)" if label == R_DEFAULT else ""
        lines.append(f"| {label}{marker} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def power_table(results: dict[str, dict[str, float]]) -> str:
    """Five groups: clusters per seed and the smallest ARI, by calibration, data and depth sd."""
    labels = sorted(
        {k.split("|")[1] for k in results if k.startswith("power|")},
        key=list(configurations()).index,
    )
    header = "| calibration | data | " + " | ".join(f"sd {sd}" for sd in DEPTH_SDS) + " |"
    lines = [header, "|---|---|" + "---:|" * len(DEPTH_SDS)]
    for label in labels:
        for data in SHAPES:
            cells = []
            for sd in DEPTH_SDS:
                key = f"power|{label}|{data}|{sd}|"
                runs = [v for k, v in results.items() if k.startswith(key)]
                if not runs:
                    cells.append("")
                    continue
                clusters = "/".join(str(run["clusters"] or "none") for run in runs)
                cells.append(f"K {clusters}, ARI >= {min(run['ari'] for run in runs):.2f}")
            lines.append(f"| {label} | {data} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def real_table(results: dict[str, dict[str, float]]) -> str:
    """Clusters and ARI per seed on real data, with R's settings and the defaults."""
    lines = ["| data | settings | clusters by seed | ARI by seed |", "|---|---|---|---|"]
    sets = dict.fromkeys(k.split("|")[1] for k in results if k.startswith("real|"))
    for data in sets:
        for settings in ("R", "default"):
            runs = [v for k, v in results.items() if k.startswith(f"real|{data}|{settings}|")]
            if runs:
                clusters = ", ".join(str(run["clusters"] or "none") for run in runs)
                aris = ", ".join(f"{run['ari']:.2f}" for run in runs)
                lines.append(f"| {data} | {settings} | {clusters} | {aris} |")
    return "\n".join(lines) + "\n"


def passing(results: dict[str, dict[str, float]]) -> list[str]:
    """Calibrations that split at most 5% of the seeds at sd 0.6."""
    kept = []
    for label in configurations():
        runs = [v for k, v in results.items() if k.startswith(f"type1|{label}|sparse|0.6|")]
        if runs and sum(run["clusters"] != 1 for run in runs) <= 0.05 * len(runs):
            kept.append(label)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="*", default=["type1", "power", "real"])
    parser.add_argument("--data-dir", type=Path, default=Path("benchmark-data"))
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    results_file = args.data_dir / "calibration.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}

    def record(key: str, run: Callable[[], dict[str, float]]) -> None:
        if key in results:
            return
        results[key] = run()
        results_file.write_text(json.dumps(results, indent=1))
        print(key, json.dumps(results[key]), flush=True)

    parts = {"type1": type1_runs, "power": lambda: power_runs(passing(results))}
    for part, runs in parts.items():
        if part in args.parts:
            for label, data, sd, groups, seed in runs():
                record(
                    f"{part}|{label}|{data}|{sd}|{seed}",
                    lambda a=(label, data, sd, groups, seed): simulated_run(*a),
                )
    if "real" in args.parts:
        for name, options, seed, load, truth in real_runs():
            record(
                f"real|{name}|{seed}",
                lambda load=load, truth=truth, options={**options, "seed": seed}: _clustered(
                    load(), truth, options
                ),
            )
    readme = PAGE
    for name, table in (
        ("calibration-type1", split_table),
        ("calibration-power", power_table),
        ("calibration-real", real_table),
    ):
        text = table(results)
        print(text)
        replace_readme_section(readme, name, text)


if __name__ == "__main__":
    main()
