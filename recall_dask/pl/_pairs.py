"""What tells the final clusters apart, pair by pair: how many genes each pair selects, and
its strongest marker candidates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd

from recall_dask.choices import DEFAULT_KEY
from recall_dask.errors import InputError
from recall_dask.pl._axes import (
    axes_or_new,
    final_selected,
    merged_clusters,
    palette,
    run_results,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def selected_genes(
    adata: ad.AnnData, key_added: str = DEFAULT_KEY, *, ax: Axes | None = None
) -> Axes:
    """Heatmap of the genes selected for every pair of final clusters (``n_selected``; the
    diagonal blank), the counts written in when there are at most 16 clusters. With
    ``--draws``, a pair with a cluster made by merging a failing consensus pair is starred:
    it passed only after the merge.

    Draws on ``ax`` if given, else on a new figure; returns the axes.
    """
    _, record = run_results(adata, key_added)
    return selected_heatmap(final_selected(record), merged_clusters(record), ax=ax)


def selected_heatmap(
    n_selected: np.ndarray, merged: Sequence[int] = (), *, ax: Axes | None = None
) -> Axes:
    """The heatmap of :func:`selected_genes`, from the clusters x clusters counts (-1 on the
    diagonal) and the clusters made by merging."""
    from matplotlib import colormaps

    k = n_selected.shape[0]
    side = float(np.clip(1.5 + 0.45 * k, 3.5, 10))
    ax = axes_or_new(ax, side + 1.2, side)
    values = np.ma.masked_less(n_selected, 0)
    image = ax.imshow(values, cmap=colormaps["viridis"].with_extremes(bad="#e8e8e8"))
    if k <= 16:
        for a, b in zip(*np.nonzero(~np.ma.getmaskarray(values)), strict=True):
            ink = "black" if image.norm(values[a, b]) > 0.5 else "white"
            star = "*" if a in merged or b in merged else ""
            ax.text(
                b, a, f"{int(values[a, b])}{star}", ha="center", va="center", fontsize=8, color=ink
            )
    ax.set(xticks=range(k), yticks=range(k), xlabel="cluster", ylabel="cluster")
    ax.figure.colorbar(image, ax=ax, label="genes selected", shrink=0.8)
    return ax


def markers(
    adata: ad.AnnData,
    key_added: str = DEFAULT_KEY,
    *,
    n_genes: int = 3,
    pairs: Sequence[tuple[int, int]] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """The top marker candidates of each pair of final clusters: its ``n_genes``
    knockoff-selected genes with the largest W = -log10 p(gene) + log10 p(artificial twin),
    one bar each, coloured by the cluster of the pair where the gene ranks higher
    (``uns[key_added]['markers']``). ``pairs`` picks pairs ``(a, b)`` with ``a < b``; all
    pairs by default.

    Count splitting has no artificial twins and so no W: its runs raise InputError.
    Draws on ``ax`` if given, else on a new figure; returns the axes.
    """
    keys, record = run_results(adata, key_added)
    if "markers" not in record:
        raise InputError(
            f"uns['{keys.record}'] has no marker candidates: count splitting selects genes by "
            "their p-values on the test half and has no knockoff W"
        )
    columns = ("cluster_a", "cluster_b", "gene", "W", "higher_in")
    table = pd.DataFrame({key: np.asarray(record["markers"][key]) for key in columns})
    if pairs is not None:
        chosen = pd.MultiIndex.from_tuples([tuple(pair) for pair in pairs])
        table = table[pd.MultiIndex.from_frame(table[["cluster_a", "cluster_b"]]).isin(chosen)]
    top = table.groupby(["cluster_a", "cluster_b"], sort=False).head(n_genes)
    ax = axes_or_new(ax, 6.0, float(np.clip(0.8 + 0.22 * len(top), 2.5, 30)))
    if top.empty:
        ax.text(0.5, 0.5, "no pairs to tell apart", ha="center", va="center")
        ax.set_axis_off()
        return ax
    colours = palette(len(adata.obs[keys.labels].cat.categories))
    rows = np.arange(len(top))
    ax.barh(rows, top["W"], color=colours[top["higher_in"].to_numpy()])
    ax.set_yticks(
        rows,
        [
            f"{a} vs {b}: {gene} \u2191{up}"
            for a, b, gene, up in top[["cluster_a", "cluster_b", "gene", "higher_in"]].itertuples(
                index=False
            )
        ],
        fontsize=8,
    )
    ax.invert_yaxis()
    ax.set(xlabel="W", title=f"strongest {n_genes} marker candidates per pair (\u2191 higher in)")
    return ax
