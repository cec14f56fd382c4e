"""Why not dask-ml: its PCAs against our streamed exact Gram, on the same scaled matrix.

The input is a run's augmented matrix: the simulated cells of ``benchmarks/scale.py`` (20,000
genes, 8 groups), ingested, 2,000 variable genes and their ZIP artificial twins, log-normalized
and kept in a work store under ``--data-dir`` (made once, not timed). Each method then runs in
a fresh process, reads that store by row chunks and computes 50 PCs of the scaled matrix
(Seurat's ScaleData: z-scores clipped at 10):

* ``exact``: ours, the streamed Gram matrix and its eigenvectors (what a run does);
* ``incremental``: ``dask_ml.decomposition.IncrementalPCA`` over the row chunks (densified);
* ``randomized``: ``dask_ml.decomposition.PCA(svd_solver="randomized")`` on the dense dask
  array of the scaled matrix, with dask-ml's default of no power iterations;
* ``randomized-4``: the same with 4 power iterations (``iterated_power=4``), which randomized
  SVD needs when the spectrum decays slowly, as here (thousands of noise features).

Reported: wall time and peak memory of the process, and two angles to the exact PCs. The 8
groups span 7 dimensions, whose PCs stand out of the noise; their eigenvalues are close to
each other, so single PCs are not comparable, but their span is. So: the largest angle between
the exact PCs 1-7 and the method's first 10 PCs (0 when the method finds the groups' span),
and the largest principal angle between the first 10 PCs of both, which also counts PCs 8-10,
drawn from the bulk of noise eigenvalues (near 90 degrees for any method but the same one).
Wall time and memory are kept per method in ``DATA_DIR/dask_ml_pca.json`` and the loadings
beside it, so ``--methods`` can measure some methods again.

    python benchmarks/dask_ml_pca.py --cells 200000 --data-dir /scratch/recall-bench
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _measure import replace_readme_section, run_measured

ROOT = Path(__file__).resolve().parents[1]
#: The manual's page that holds this script's tables, between their markers.
PAGE = ROOT / "docs" / "benchmarks" / "performance.md"
METHODS = ("exact", "incremental", "randomized", "randomized-4")
N_PCS = 50
#: The simulated groups; their means span one dimension fewer.
GROUPS = 8
SIGNAL_PCS = GROUPS - 1


def augmented_store(data_dir: Path, n_cells: int) -> Path:
    """The run's log-normalized [genes | artificial genes] of the simulated cells, on disk."""
    store = data_dir / f"augmented_{n_cells}.zarr"
    if (store / "done").exists():
        return store
    from scale import simulated_h5

    from recall_dask import io
    from recall_dask.io.workstore import write_tiles
    from recall_dask.nulls import fit_null
    from recall_dask.preprocess import (
        augmented_log_normalized,
        column_moments,
        select_variable_genes,
    )
    from recall_dask.stats.ranksums import feature_block_for

    counts_store = data_dir / f"counts_{n_cells}.zarr"
    if not counts_store.exists():
        io.ingest(simulated_h5(data_dir, n_cells, 20_000, GROUPS), counts_store)
    counts = io.open_counts(counts_store)
    moments = column_moments(counts.X).compute()
    genes = select_variable_genes(counts.X, counts.var, 2000, moments)
    null = fit_null(counts.X[:, genes], "zip", 0)
    data = augmented_log_normalized(counts.X, genes, null, 0)
    tiles = write_tiles(data, store, feature_block_for(n_cells))
    layout = {"chunks": list(tiles.row_chunks), "bounds": list(tiles.feature_bounds)}
    (store / "done").write_text(json.dumps(layout))
    return store


def one(method: str, store: Path, result: Path) -> None:
    """In a child process: 50 PCs of the scaled matrix by ``method``; loadings saved."""
    import dask

    from recall_dask.io.workstore import Tiles
    from recall_dask.pca import pca_from_gram, scaled_gram
    from recall_dask.preprocess import feature_scaling

    dask.config.set(scheduler="threads", num_workers=2)
    layout = json.loads((store / "done").read_text())
    data = Tiles(str(store), tuple(layout["chunks"]), tuple(layout["bounds"])).by_rows()
    scaling = feature_scaling(data, 10.0)
    if method == "exact":
        loadings = pca_from_gram(scaled_gram(data, scaling), N_PCS).loadings
    else:
        from dask_ml.decomposition import PCA, IncrementalPCA

        cap, mean, inv_std = scaling.cap, scaling.mean, scaling.inv_std
        dense = data.map_blocks(
            lambda block: (np.minimum(block.toarray(), cap) - mean) * inv_std,
            dtype=np.float64,
            meta=np.empty((0, 0)),
        )
        if method == "incremental":
            model = IncrementalPCA(n_components=N_PCS, batch_size=max(layout["chunks"]))
        else:
            power = 4 if method == "randomized-4" else 0
            model = PCA(
                n_components=N_PCS, svd_solver="randomized", iterated_power=power, random_state=0
            )
        model.fit(dense)
        loadings = np.asarray(model.components_).T
    np.save(result, loadings)


def largest_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Degrees: the largest principal angle between the column spans of ``a`` and ``b``."""
    from scipy.linalg import subspace_angles

    return float(np.degrees(subspace_angles(a, b).max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one[0], Path(args.one[1]), Path(args.one[2]))
        return
    args.data_dir.mkdir(parents=True, exist_ok=True)
    store = augmented_store(args.data_dir, args.cells)
    results_file = args.data_dir / "dask_ml_pca.json"
    measured = json.loads(results_file.read_text()) if results_file.exists() else {}
    for method in args.methods:
        result = args.data_dir / f"loadings_{method}.npy"
        command = [sys.executable, __file__, "--one", method, str(store), str(result)]
        wall, peak = run_measured(command)
        measured[method] = {"wall": wall, "peak": peak}
        results_file.write_text(json.dumps(measured, indent=1))
        print(method, f"{wall:.0f} s", f"{peak:.2f} GiB", flush=True)
    exact = np.load(args.data_dir / "loadings_exact.npy")
    lines = [
        "| PCA | wall s | peak GiB | exact PCs 1-7 to its first 10 | first 10 PCs to exact's |",
        "|---|---:|---:|---:|---:|",
    ]
    for method in (m for m in METHODS if m in measured):
        pcs = np.load(args.data_dir / f"loadings_{method}.npy")[:, :10]
        lines.append(
            f"| {method} | {measured[method]['wall']:.0f} | {measured[method]['peak']:.2f} | "
            f"{largest_angle(exact[:, :SIGNAL_PCS], pcs):.2g} degrees | "
            f"{largest_angle(exact[:, :10], pcs):.2g} degrees |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    replace_readme_section(PAGE, "dask-ml-benchmark", text)


if __name__ == "__main__":
    main()
