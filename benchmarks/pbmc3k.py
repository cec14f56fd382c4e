"""Time the bundled PBMC 3k run stage by stage and write the table into
the manual (docs/benchmarks/performance.md).

Runs ``recall-dask run`` in a fresh process (process start to labels), several times, with
the R package's defaults, and samples the resident memory of the whole process tree (client,
scheduler, nanny and worker processes). The first run also compiles and caches the numba
kernels; it is reported separately.

    python benchmarks/pbmc3k.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import anndata as ad
from _measure import replace_readme_section, run_measured

from recall_dask.io import BUNDLED_PBMC3K

ROOT = Path(__file__).resolve().parents[1]
#: The manual's page that holds this script's tables, between their markers.
PAGE = ROOT / "docs" / "benchmarks" / "performance.md"


def one_run(tmp: Path, index: int) -> dict[str, object]:
    out = tmp / f"pbmc{index}.zarr"
    command = [
        sys.executable,
        "-m",
        "recall_dask",
        "run",
        str(BUNDLED_PBMC3K),
        "-o",
        str(out),
        "--quiet",
    ]
    wall, peak = run_measured(command)
    record = ad.read_zarr(out).uns["recall"]
    return {
        "wall": wall,
        "peak": peak,
        "stages": dict(
            zip(record["stage_seconds"]["stage"], record["stage_seconds"]["seconds"], strict=True)
        ),
        "clusters": [
            record["iterations"][str(i)]["n_clusters"] for i in range(record["n_iterations"])
        ],
    }


def table(runs: list[dict[str, object]]) -> str:
    warm = runs[1:] or runs
    stages = list(warm[0]["stages"])
    lines = ["| stage | seconds (median of warm runs) |", "|---|---|"]
    for stage in stages:
        lines.append(f"| {stage} | {statistics.median(r['stages'][stage] for r in warm):.2f} |")
    wall = statistics.median(r["wall"] for r in warm)
    peak = max(r["peak"] for r in runs)
    lines += [
        f"| **whole run, process start to labels** | **{wall:.1f}** |",
        "",
        f"- First run after clearing the numba cache (kernels compile): {runs[0]['wall']:.1f} s.",
        f"- Peak resident memory of all processes: {peak:.2f} GiB.",
        f"- Clusters per iteration: {' -> '.join(map(str, warm[0]['clusters']))} (seed 0; how "
        "this compares with R over seeds: `benchmarks/r_parity.py`).",
        "- Targets: under 15 s and under 2 GiB. R (Seurat 4.3 + limma): 134-146 s, 0.94 GiB.",
        "",
    ]
    return "\n".join(lines)


def clear_numba_cache() -> None:
    """Make the first run truly cold: numba recompiles and re-caches the kernels."""
    import recall_dask

    for cached in Path(recall_dask.__file__).parent.rglob("__pycache__/*.nb[ic]"):
        cached.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    clear_numba_cache()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(Path(tmp), i) for i in range(args.repeats)]
    text = table(runs)
    print(text)
    replace_readme_section(PAGE, "pbmc3k-benchmark", text)


if __name__ == "__main__":
    main()
