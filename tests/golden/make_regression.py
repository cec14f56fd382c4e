"""Store what the pipeline answers today, so that later changes that must not change results
(moves, renames, new plumbing) can be checked against it (``tests/test_regression.py``).

    python tests/golden/make_regression.py [CASE ...]

With case names, only those cases are run again and replaced in the file.

Writes ``regression.npz``: for each case, the labels, the first clusters, the confidence (with
draws), every entry of ``uns['recall']`` but the versions and timings, flattened to
``case/obs/...`` and ``case/uns/...`` keys, and for PBMC 3k the embedding's first 10 PCs.
Rerun it only when a change is meant to change results, and say so in the commit.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

HERE = Path(__file__).resolve().parent
#: Fields of uns['recall'] that differ between equal runs.
UNSTABLE = ("versions", "stage_seconds")


def cases() -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (a function giving a fresh AnnData of counts, recall's options)."""
    from recall_dask import io
    from recall_dask.simulate import simulate

    def pbmc3k() -> ad.AnnData:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            io.ingest(io.BUNDLED_PBMC3K, Path(tmp) / "pbmc.zarr")
            adata = io.open_counts(Path(tmp) / "pbmc.zarr")
            adata.X = adata.X.compute()
        return adata

    def five_groups() -> ad.AnnData:
        return simulate(1500, 1500, 5, de_prob=0.1, seed=1, log_mean=-1.0)

    def one_population() -> ad.AnnData:
        return simulate(2000, 1500, 1, seed=11, log_mean=-1.0)

    def three_groups() -> ad.AnnData:
        return simulate(600, 800, 3, de_prob=0.05, seed=5, log_mean=-1.0)

    # The R package's procedure, as stored before depth-aware calibration became the default.
    r = {"null_method": "zip", "depth": "none", "split": "poisson"}
    return {
        **{f"pbmc3k-seed{seed}": (pbmc3k, {"seed": seed, **r}) for seed in range(3)},
        "five-groups": (five_groups, {"seed": 1, "n_hvg": 500, **r}),
        "one-population": (one_population, {"seed": 1, "n_hvg": 500, **r}),
        "five-groups-countsplit": (
            five_groups,
            {"seed": 1, "n_hvg": 500, "method": "countsplit", **r},
        ),
        "three-groups-draws": (three_groups, {"seed": 3, "n_hvg": 300, "draws": 4, **r}),
        # Ten draws with the defaults (stored before the draws' tasks moved to the workers).
        "five-groups-draws10": (five_groups, {"seed": 2, "n_hvg": 500, "draws": 10}),
        # The defaults: depth-aware nulls, count splitting by NB with depth strata.
        "pbmc3k-seed0-depth": (pbmc3k, {"seed": 0}),
        "one-population-depth": (one_population, {"seed": 1, "n_hvg": 500}),
        "five-groups-countsplit-depth": (
            five_groups,
            {"seed": 1, "n_hvg": 500, "method": "countsplit"},
        ),
        "three-groups-draws-depth": (three_groups, {"seed": 3, "n_hvg": 300, "draws": 4}),
    }


def run_case(make: Any, options: dict[str, Any]) -> ad.AnnData:
    from recall_dask import recall

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return recall(make(), progress=False, **options)


def flattened(prefix: str, value: Any) -> Iterator[tuple[str, np.ndarray]]:
    """Nested dicts as ``prefix/key/...`` entries of arrays (``None`` values left out)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flattened(f"{prefix}/{key}", item)
    elif value is not None:  # an unset option (batch_key); the npz holds no objects
        yield prefix, np.asarray(value)


#: PCs of the PBMC 3k embeddings kept (those the graph uses), which keeps the file small.
STORED_PCS = 10


def answers(name: str, adata: ad.AnnData) -> dict[str, np.ndarray]:
    """What a case's run must keep answering (the embedding: PBMC 3k's first PCs), named as
    the results were before ``key_added`` (obs/recall_clusters, obsm/X_pca, ...), so that
    the stored file still applies."""
    from recall_dask.io.results import ResultKeys

    keys = ResultKeys.of("recall")
    out = {
        f"{name}/obs/recall_clusters": adata.obs[keys.labels].cat.codes.to_numpy(),
        f"{name}/obs/initial_clusters": adata.obs[keys.initial].cat.codes.to_numpy(),
    }
    if name.startswith("pbmc3k"):
        out[f"{name}/obsm/X_pca"] = adata.obsm[keys.embedding][:, :STORED_PCS]
    if keys.confidence in adata.obs:
        out[f"{name}/obs/recall_confidence"] = adata.obs[keys.confidence].to_numpy()
    record = {k: v for k, v in adata.uns[keys.record].items() if k not in UNSTABLE}
    out.update(flattened(f"{name}/uns", record))
    return out


def main(names: list[str]) -> None:
    path = HERE / "regression.npz"
    stored: dict[str, np.ndarray] = {}
    if names:  # keep the other cases as stored
        with np.load(path) as kept:
            stored = {k: kept[k] for k in kept.files if k.split("/")[0] not in names}
    for name, (make, options) in cases().items():
        if not names or name in names:
            stored.update(answers(name, run_case(make, options)))
            print(name, flush=True)
    np.savez_compressed(path, **stored)


if __name__ == "__main__":
    main(sys.argv[1:])
