"""Every method at 10k and 100k cells: each null model of recall, and count splitting.

For each size, the simulated Cell Ranger .h5 of ``scale.py`` (20,000 genes, 8 known groups) is
clustered by ``recall-dask run`` once per method in a fresh process tree, recording wall time
(ingest included), the peak resident memory summed over all processes, the iterations, the
number of clusters and the ARI against the true groups. Results accumulate in
``DATA_DIR/methods.json``; the table goes into docs/benchmarks/performance.md.

    python benchmarks/methods.py --cells 10000 100000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _measure import replace_readme_section
from scale import PAGE, one_size

from recall_dask.nulls import NULL_METHODS

METHODS = {
    **{f"recall, {null}": ("--null-method", null) for null in NULL_METHODS},
    "countsplit": ("--method", "countsplit"),
}


def table(results: dict[str, dict[str, object]], sizes: list[int]) -> str:
    header = ["method", *(f"{n:,} cells: wall, peak GiB, K, ARI" for n in sizes)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(sizes)]
    for method in METHODS:
        cells = [method]
        for n in sizes:
            row = results.get(f"{method} @ {n}")
            cells.append(
                f"{row['wall']:.0f} s, {row['peak']:.2f}, {row['clusters']}, {row['ari']:.2f}"
                if row
                else "not run"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--methods", nargs="*", choices=METHODS, default=list(METHODS))
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=Path("benchmark-data"))
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    results_file = args.data_dir / "methods.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for n_cells in args.cells:
        for method in args.methods:
            row = one_size(args.data_dir, n_cells, args.genes, args.groups, METHODS[method])
            row.pop("_labels"), row.pop("labels_file")
            results[f"{method} @ {n_cells}"] = row
            results_file.write_text(json.dumps(results, indent=1))
            print(method, json.dumps(row), flush=True)
    text = table(results, sorted({int(k.rsplit("@", 1)[1]) for k in results}))
    print(text)
    replace_readme_section(PAGE, "methods-benchmark", text)


if __name__ == "__main__":
    main()
