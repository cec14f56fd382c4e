"""Make the golden fixtures: run ``seurat_golden.R`` on the bundled PBMC 3k and pack what it
writes into compact ``.npz`` files beside this script.

    python tests/golden/make_golden.py [--seed 1]

Needs R with Seurat 4.3.0, lamW and limma (see README.md here); the tests read only the
``.npz`` files, so CI never needs R.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp

from recall_dask.io import BUNDLED_PBMC3K

HERE = Path(__file__).resolve().parent
PLAIN_RESOLUTIONS = (0.8, 0.5, 0.3)
LATTICE_RESOLUTIONS = (1.2, 0.8, 0.4)
MARKER_PAIRS = ((5, 0), (1, 0), (10, 3))


def _table(path: Path, dtype=np.float64) -> np.ndarray:
    return np.loadtxt(path, dtype=dtype, ndmin=2)


def _labels(path: Path) -> np.ndarray:
    """Cluster labels as R wrote them (one column per resolution), as small integers."""
    return np.array([line.split() for line in path.read_text().splitlines()], dtype=np.int16)


def _triplets(path: Path) -> dict[str, np.ndarray]:
    rows, cols, weights = _table(path).T
    return {"snn_row": rows.astype(np.int32), "snn_col": cols.astype(np.int32), "snn": weights}


def pack(raw: Path, seed: int) -> None:
    np.savez_compressed(
        HERE / "pbmc3k_plain.npz",
        variable_genes=_table(raw / "plain_variable_genes.txt", np.int32).ravel(),
        embedding=_table(raw / "plain_embedding.tsv"),
        neighbors=_table(raw / "plain_neighbors.tsv", np.int32),
        clusters=_labels(raw / "plain_clusters.tsv"),
        resolutions=np.array(PLAIN_RESOLUTIONS),
        **_triplets(raw / "plain_snn.tsv"),
    )
    np.savez_compressed(
        HERE / "lattice.npz",
        points=_table(raw / "lattice_points.tsv"),
        clusters=_labels(raw / "lattice_clusters.tsv"),
        resolutions=np.array(LATTICE_RESOLUTIONS),
        **_triplets(raw / "lattice_snn.tsv"),
    )
    draws = sp.csr_matrix(scipy.io.mmread(raw / "draws.mtx").T)  # cells x variable genes
    markers = [_table(raw / f"markers_{a}_{b}.tsv") for a, b in MARKER_PAIRS]
    selected = np.loadtxt(raw / "markers_selected.tsv", skiprows=1, dtype=np.int64, ndmin=2)[:, 2]
    np.savez_compressed(
        HERE / f"pbmc3k_augmented_seed{seed}.npz",
        draws_indptr=draws.indptr.astype(np.int32),
        draws_indices=draws.indices.astype(np.uint16),
        draws_data=draws.data.astype(np.uint16),
        embedding=_table(raw / "augmented_embedding.tsv"),
        sdev=_table(raw / "augmented_sdev.txt").ravel(),
        clusters=_labels(raw / "augmented_clusters.txt").ravel(),
        pairs=np.array(MARKER_PAIRS),
        p_gene=np.stack([m[:, 0] for m in markers]),
        p_artificial=np.stack([m[:, 1] for m in markers]),
        W=np.stack([m[:, 2] for m in markers]),
        selected=selected,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="R seed of the artificial genes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as raw:
        script = HERE / "seurat_golden.R"
        subprocess.run(
            ["Rscript", str(script), str(BUNDLED_PBMC3K), str(args.seed), raw], check=True
        )
        pack(Path(raw), args.seed)


if __name__ == "__main__":
    main()
