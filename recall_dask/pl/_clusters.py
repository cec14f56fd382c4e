"""The clusters themselves: on an embedding, by size, and by batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import numpy as np

from recall_dask.choices import DEFAULT_KEY
from recall_dask.errors import InputError
from recall_dask.io.results import ResultKeys
from recall_dask.pl._axes import axes_or_new, palette, point_size, run_results

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def embedding_of(adata: ad.AnnData, keys: ResultKeys, basis: str | None) -> np.ndarray:
    """The first two columns of ``obsm[basis]``, by default of the report's UMAP."""
    basis = keys.umap if basis is None else basis
    if basis not in adata.obsm:
        raise InputError(
            f"no obsm['{basis}']: pass basis= a 2-D embedding in obsm (e.g. 'X_umap' of "
            "sc.tl.umap), or write the report, which stores its UMAP there"
        )
    return np.asarray(adata.obsm[basis])[:, :2]


def embedding(
    adata: ad.AnnData,
    key_added: str = DEFAULT_KEY,
    *,
    color: str | None = None,
    basis: str | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Axes:
    """The cells on a 2-D embedding, each label of the categorical ``obs[color]`` in its
    colour: by default the calibrated clusters, ``obs[key_added]``. Clusterings (the run's
    labels, its initial and default clusterings) are named at their median; other columns
    (batches) get a legend. ``basis`` as for :func:`~recall_dask.pl.confidence`.

    Draws on ``ax`` if given, else on a new figure; returns the axes.
    """
    from matplotlib import patheffects

    keys, _ = run_results(adata, key_added)
    color = keys.labels if color is None else color
    points = embedding_of(adata, keys, basis)
    labels = adata.obs[color].astype("category")
    named = color in (keys.labels, keys.initial, keys.default)
    ax = axes_or_new(ax, 4.6, 4.9)
    codes = labels.cat.codes.to_numpy()
    names = labels.cat.categories
    colours = palette(len(names))
    order = np.random.default_rng(0).permutation(len(points))  # no cluster hides another
    ax.scatter(
        *points[order].T,
        c=colours[codes[order]],
        s=point_size(len(points)),
        linewidths=0,
        rasterized=True,
    )
    outline = [patheffects.withStroke(linewidth=3, foreground="white")]
    for code, name in enumerate(names):
        if not named:
            ax.scatter([], [], color=colours[code], s=20, label=name)
        elif (codes == code).any():
            x, y = np.median(points[codes == code], axis=0)
            ax.text(
                x, y, name, ha="center", va="center", fontsize=10, weight="bold",
                path_effects=outline,
            )  # fmt: skip
    if not named:
        ax.legend(fontsize=8, markerscale=1, frameon=False, loc="best")
    unit = "clusters" if named else "batches" if color == keys.batch else "groups"
    ax.set(title=f"{title or color}: {len(names)} {unit}", xticks=[], yticks=[])
    ax.set(xlabel="UMAP 1", ylabel="UMAP 2")
    return ax


def sizes(adata: ad.AnnData, key_added: str = DEFAULT_KEY, *, ax: Axes | None = None) -> Axes:
    """Cells per calibrated cluster, in the colours of :func:`embedding`.

    Draws on ``ax`` if given, else on a new figure; returns the axes.
    """
    keys, _ = run_results(adata, key_added)
    labels = adata.obs[keys.labels]
    counts = labels.value_counts(sort=False).reindex(labels.cat.categories)
    ax = axes_or_new(ax, float(np.clip(1.5 + 0.4 * len(counts), 4, 12)), 3.4)
    bars = ax.bar(np.arange(len(counts)), counts.to_numpy(), color=palette(len(counts)))
    ax.bar_label(bars, fontsize=8)
    ax.set(xticks=np.arange(len(counts)), xlabel="recall cluster", ylabel="cells")
    ax.set_xticklabels(counts.index.astype(str))
    ax.margins(y=0.12)
    return ax


def composition(adata: ad.AnnData, key_added: str = DEFAULT_KEY, *, ax: Axes | None = None) -> Axes:
    """Each cluster's cells by batch, as stacked bars of shares in the colours of the batch
    embedding, with the cluster's cell count on top. Needs a run with ``--batch-key`` (else
    InputError).

    Draws on ``ax`` if given, else on a new figure; returns the axes.
    """
    keys, record = run_results(adata, key_added)
    if "batches" not in record:
        raise InputError(
            f"uns['{keys.record}'] has no batches: it comes from runs with --batch-key"
        )
    counts = np.asarray(record["batches"]["composition"])
    names = [str(name) for name in record["batches"]["names"]]
    n_clusters, n_batches = counts.shape
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax = axes_or_new(ax, float(np.clip(2.5 + 0.4 * n_clusters, 4.5, 12)), 3.6)
    colours = palette(n_batches)
    bottom = np.zeros(n_clusters)
    for b in range(n_batches):
        ax.bar(np.arange(n_clusters), shares[:, b], bottom=bottom, color=colours[b], label=names[b])
        bottom += shares[:, b]
    for cluster, cells in enumerate(counts.sum(axis=1)):
        ax.text(cluster, 1.02, f"{cells:,}", ha="center", va="bottom", fontsize=7)
    ax.set(xticks=np.arange(n_clusters), xlabel="recall cluster", ylabel="share of cells")
    ax.set_ylim(0, 1.12)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax
