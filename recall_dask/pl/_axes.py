"""What every plot shares: matplotlib imported on first use, the axes to draw on, the
cluster colours, and a run's results found under ``key_added``."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np

from recall_dask.io.results import ResultKeys, stored_keys

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def require_matplotlib() -> None:
    """Raise one clear line unless matplotlib is installed (the ``report`` extra)."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("recall_dask.pl needs matplotlib: pip install 'recall-dask[report]'")


def axes_or_new(ax: Axes | None, width: float, height: float) -> Axes:
    """``ax``, or the axes of a new pyplot figure of that size, which a notebook shows."""
    require_matplotlib()
    if ax is not None:
        return ax
    from matplotlib import pyplot as plt

    _, new = plt.subplots(figsize=(width, height), layout="constrained")
    return new


def palette(n: int) -> np.ndarray:
    """``n`` distinguishable RGBA colours, one per cluster."""
    from matplotlib import colormaps

    if n <= 20:
        return colormaps["tab10" if n <= 10 else "tab20"](np.arange(n))
    return colormaps["turbo"](np.linspace(0.05, 0.95, n))


def run_results(adata: ad.AnnData, key_added: str) -> tuple[ResultKeys, dict]:
    """The keys of the run under ``key_added`` and its record, ``uns[key_added]``; also in
    stores written before ``key_added`` existed. Raises InputError when there is no run."""
    keys = stored_keys(adata, "the AnnData", key_added)
    return keys, adata.uns[keys.record]


def iteration_trace(record: dict) -> list[dict]:
    """``uns['recall']['iterations']`` as a list, first iteration first."""
    return [record["iterations"][str(i)] for i in range(int(record["n_iterations"]))]


def final_selected(record: dict) -> np.ndarray:
    """Genes selected per pair of the final clusters (stores before ``--draws`` kept them in
    the last iteration only)."""
    if "n_selected" in record:
        return np.asarray(record["n_selected"])
    return np.asarray(iteration_trace(record)[-1]["n_selected"])


def merged_clusters(record: dict) -> list[int]:
    """Final clusters made by merging consensus pairs that failed the draws' tests."""
    merges = record.get("stability", {}).get("merges")
    return [] if merges is None else np.asarray(merges["merged_into"]).tolist()


def point_size(n_cells: int) -> float:
    """A marker size that keeps thousands of cells apart and a million from a blot."""
    return float(np.clip(3e4 / n_cells, 0.2, 12))
