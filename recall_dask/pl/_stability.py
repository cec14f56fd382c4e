"""How stable the answer of a run over several draws (``--draws``) is: per cluster, and per
cell on an embedding."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import numpy as np

from recall_dask.choices import DEFAULT_KEY
from recall_dask.errors import InputError
from recall_dask.io.results import ResultKeys
from recall_dask.pl._axes import axes_or_new, palette, point_size, run_results
from recall_dask.pl._clusters import embedding_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _stability(keys: ResultKeys, record: dict) -> dict:
    if "stability" not in record:
        raise InputError(
            f"uns['{keys.record}'] has no stability: it comes from runs with --draws 2 or more"
        )
    return record["stability"]


def stability(adata: ad.AnnData, key_added: str = DEFAULT_KEY, *, ax: Axes | None = None) -> Axes:
    """Each final cluster's stability, the mean confidence of its cells, as bars in the
    clusters' colours. Needs a run with ``--draws`` 2 or more (else InputError).

    Draws on ``ax`` if given, else on a new figure; returns the axes.
    """
    keys, record = run_results(adata, key_added)
    cluster_stability = np.asarray(_stability(keys, record)["cluster_stability"])
    k = len(cluster_stability)
    ax = axes_or_new(ax, float(np.clip(1.5 + 0.4 * k, 4, 12)), 3.4)
    bars = ax.bar(np.arange(k), cluster_stability, color=palette(k))
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set(xticks=np.arange(k), xlabel="recall cluster", ylabel="stability", ylim=(0, 1.1))
    return ax


def confidence(
    adata: ad.AnnData,
    key_added: str = DEFAULT_KEY,
    *,
    basis: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """The cells on a 2-D embedding coloured by their confidence, the fraction of draws that
    give each cell its cluster (``obs[f"{key_added}_confidence"]``), the least confident on
    top. ``basis`` is an obsm key (e.g. ``"X_umap"`` of ``sc.tl.umap``); by default the
    report's UMAP, ``obsm[f"X_{key_added}_umap"]``. Needs a run with ``--draws`` 2 or more
    (else InputError).

    Draws on ``ax`` if given, else on a new figure; returns the axes.
    """
    keys, record = run_results(adata, key_added)
    _stability(keys, record)
    points = embedding_of(adata, keys, basis)
    values = adata.obs[keys.confidence].to_numpy()
    ax = axes_or_new(ax, 5.6, 4.9)
    order = np.argsort(-values, kind="stable")
    drawn = ax.scatter(
        *points[order].T,
        c=values[order],
        s=point_size(len(points)),
        cmap="magma",
        vmin=0,
        vmax=1,
        linewidths=0,
        rasterized=True,
    )
    ax.figure.colorbar(drawn, ax=ax, label=keys.confidence, shrink=0.8)
    ax.set(title="confidence of each cell", xticks=[], yticks=[], xlabel="UMAP 1")
    ax.set_ylabel("UMAP 2")
    return ax
