"""Resuming after a kill: what ``--resume`` saves against a rerun from scratch.

On the simulated Cell Ranger .h5 of ``benchmarks/scale.py`` (20,000 genes, 8 groups; made with
``recall-dask simulate`` if ``--data-dir`` does not hold it), each in a fresh process tree:

1. ``recall-dask run --work-dir --keep-work`` from scratch: wall time, peak memory, and the
   size of the work store it leaves (every checkpoint of the run);
2. the same command killed in calibration, by the test hook ``RECALL_DASK_TEST_KILL_AT``
   (default: when the first resolution is finished, while the second is clustered);
3. the same command with ``--resume``: wall time, and whether its labels are those of the
   run from scratch, and its embedding to 1e-10.

The table goes into docs/benchmarks/performance.md between the ``resume-benchmark`` markers.

    python benchmarks/resume.py --cells 200000
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from _measure import replace_readme_section, run_measured
from anndata.io import read_elem
from scale import CLI, simulated_h5

from recall_dask._testhook import KILL_AT

ROOT = Path(__file__).resolve().parents[1]
#: The manual's page that holds this script's tables, between their markers.
PAGE = ROOT / "docs" / "benchmarks" / "performance.md"
#: Where earlier benchmarks keep their simulated data, first found first used.
DATA_DIRS = (ROOT / "benchmarks" / "out", Path("/work/bench_data"))


def killed_seconds(command: list[str], point: str) -> float:
    """Wall seconds of ``command`` until the test hook kills its process group at ``point``."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env={**os.environ, KILL_AT: point}, start_new_session=True, text=True
    )
    process.wait()
    if process.returncode != -signal.SIGKILL:
        raise RuntimeError(f"{' '.join(command)} was not killed at {point} ({process.returncode})")
    return time.perf_counter() - start


def results(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels and embedding of a run, without reading X."""
    root = zarr.open_group(out, mode="r")
    labels = read_elem(root["obs"])["recall"].cat.codes.to_numpy()
    return labels, read_elem(root["obsm/X_recall_pca"])


def size_gib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30


def measure(source: Path, scratch: Path, point: str) -> dict[str, object]:
    """The three runs on ``source``, in ``scratch``."""
    work, out = scratch / "work", scratch / "out.zarr"
    work.mkdir()
    run = [*CLI, "run", str(source), "-o", str(out), "--work-dir", str(work), "--quiet"]
    full, peak = run_measured([*run, "--keep-work"])
    (store,) = work.glob("recall-work-*")
    store_gib = size_gib(store)
    expected = results(out)
    shutil.rmtree(store)
    shutil.rmtree(out)
    until_kill = killed_seconds(run, point)
    resumed, _ = run_measured([*run, "--resume"])
    got = results(out)
    # The labels exactly; the embedding as any rerun's (threaded BLAS may sum in another order).
    same = np.array_equal(expected[0], got[0]) and np.allclose(
        expected[1], got[1], rtol=0, atol=1e-10
    )
    return {
        "full": full,
        "peak": peak,
        "store": store_gib,
        "killed": until_kill,
        "resumed": resumed,
        "same": same,
    }


def table(n_cells: int, n_genes: int, point: str, row: dict[str, object]) -> str:
    saved = row["full"] - row["resumed"]
    return (
        "| cells x genes | from scratch | killed at | resumed | saved | work store | same "
        "labels, embedding to 1e-10 |\n|---|---|---|---|---|---|---|\n"
        f"| {n_cells:,} x {n_genes:,} | {row['full']:.0f} s | {point} after "
        f"{row['killed']:.0f} s | {row['resumed']:.0f} s | {saved:.0f} s "
        f"({saved / row['full']:.0%}) | {row['store']:.2f} GiB | "
        f"{'yes' if row['same'] else 'NO'} |\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument(
        "--kill-at",
        default="iteration-0",
        help="RECALL_DASK_TEST_KILL_AT point in calibration (default %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the simulated .h5 is or goes (default: benchmarks/out, or /work/bench_data "
        "if it holds the data)",
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="print the table, leave the manual's page alone"
    )
    args = parser.parse_args()
    name = f"sim_{args.cells}x{args.genes}_{args.groups}groups.h5"
    found = [d for d in DATA_DIRS if (d / name).exists()]
    data_dir = args.data_dir or (found[0] if found else DATA_DIRS[0])
    data_dir.mkdir(parents=True, exist_ok=True)
    source = simulated_h5(data_dir, args.cells, args.genes, args.groups)
    with tempfile.TemporaryDirectory(dir=data_dir) as scratch:
        row = measure(source, Path(scratch), args.kill_at)
    text = table(args.cells, args.genes, args.kill_at, row)
    print(text)
    if not args.no_readme:
        replace_readme_section(PAGE, "resume-benchmark", text)


if __name__ == "__main__":
    main()
