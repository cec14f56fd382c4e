"""Time the two neighbor searches (``--neighbors annoy|exact``) on embeddings of growing size.

Each search runs in a fresh process on a 10-PC embedding shaped like a clustered run's (8
groups in 10 dimensions, unit noise), and the SNN graph is built from its lists as a run
builds it. Reports seconds for the search and for the SNN graph, the peak memory of the
process, and how many of Annoy's neighbors the exact search shares (on 20,000 cells).

    python benchmarks/neighbors.py --cells 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _measure import replace_readme_section, run_measured

ROOT = Path(__file__).resolve().parents[1]
#: The manual's page that holds this script's tables, between their markers.
PAGE = ROOT / "docs" / "benchmarks" / "performance.md"
K = 20


def embedding(n_cells: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(8, 10))
    return centres[np.arange(n_cells) % 8] + rng.normal(size=(n_cells, 10))


def one(search: str, n_cells: int, result: Path) -> None:
    """In a child process: one search and its SNN graph, timed."""
    from recall_dask.graph import nearest_neighbors, shared_nearest_neighbors

    x = embedding(n_cells)
    start = time.perf_counter()
    knn = nearest_neighbors(x, K, search)
    searched = time.perf_counter()
    shared_nearest_neighbors(knn)
    result.write_text(
        json.dumps({"search": searched - start, "snn": time.perf_counter() - searched})
    )


def shared_fraction(n_cells: int = 20_000) -> float:
    from recall_dask.graph import annoy_neighbors, exact_neighbors

    x = embedding(n_cells)
    annoy, exact = annoy_neighbors(x, K), exact_neighbors(x, K)
    return float(np.mean([len(set(a) & set(b)) for a, b in zip(annoy, exact, strict=True)]) / K)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--one", nargs=3, metavar=("SEARCH", "CELLS", "RESULT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        one(args.one[0], int(args.one[1]), Path(args.one[2]))
        return
    lines = [
        "| cells | search | search s | SNN s | peak GiB |",
        "|---:|---|---:|---:|---:|",
    ]
    times: dict[str, list[float]] = {"annoy": [], "exact": []}
    result = ROOT / "benchmarks" / "out" / "neighbors.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    for n_cells in args.cells:
        for search in ("annoy", "exact"):
            command = [sys.executable, __file__, "--one", search, str(n_cells), str(result)]
            _, peak = run_measured(command)
            seconds = json.loads(result.read_text())
            times[search].append(seconds["search"])
            lines.append(
                f"| {n_cells:,} | {search} | {seconds['search']:.1f} | {seconds['snn']:.1f} | "
                f"{peak:.2f} |"
            )
            print(lines[-1], flush=True)
    if len(args.cells) > 1:
        growth = {
            search: np.polyfit(np.log(args.cells), np.log(values), 1)[0]
            for search, values in times.items()
        }
        lines += [
            "",
            "Growth exponent b of search time ~ cells^b: "
            + ", ".join(f"{search} {b:.2f}" for search, b in growth.items())
            + f". Annoy shares {shared_fraction():.1%} of the exact neighbors (20,000 cells).",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    replace_readme_section(PAGE, "neighbors-benchmark", text)


if __name__ == "__main__":
    main()
