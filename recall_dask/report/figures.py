"""The report's figures: matplotlib figures drawn by Agg, apart from pyplot's global state,
inlined in the page as base64 PNG (:func:`png_data_uri`)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from io import BytesIO
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _palette(n: int) -> np.ndarray:
    """``n`` distinguishable RGBA colours, one per cluster."""
    from matplotlib import colormaps

    if n <= 20:
        return colormaps["tab10" if n <= 10 else "tab20"](np.arange(n))
    return colormaps["turbo"](np.linspace(0.05, 0.95, n))


def _figure(width: float, height: float) -> Figure:
    """A matplotlib figure drawn by Agg, apart from pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_data_uri(figure: Figure) -> str:
    """The figure as an inline ``data:image/png;base64,...`` URI."""
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def umap_figure(umap: np.ndarray, panels: dict[str, pd.Series], unit: str = "clusters") -> Figure:
    """One UMAP panel per labelling, each label in its colour. Clusters are named at their
    median; other ``unit``s (batches, spread over the clusters) in a legend."""
    from matplotlib import patheffects

    figure = _figure(4.6 * len(panels), 4.9)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    size = float(np.clip(3e4 / len(umap), 0.2, 12))
    order = np.random.default_rng(0).permutation(len(umap))  # no cluster hides another
    outline = [patheffects.withStroke(linewidth=3, foreground="white")]
    for ax, (title, labels) in zip(axes, panels.items(), strict=True):
        codes = labels.cat.codes.to_numpy()
        names = labels.cat.categories
        colours = _palette(len(names))
        ax.scatter(*umap[order].T, c=colours[codes[order]], s=size, linewidths=0, rasterized=True)
        if unit != "clusters":
            for colour, name in zip(colours, names, strict=True):
                ax.scatter([], [], color=colour, s=20, label=name)
            ax.legend(fontsize=8, markerscale=1, frameon=False, loc="best")
        for code, name in enumerate(names if unit == "clusters" else ()):
            if (codes == code).any():
                x, y = np.median(umap[codes == code], axis=0)
                ax.text(
                    x,
                    y,
                    name,
                    ha="center",
                    va="center",
                    fontsize=10,
                    weight="bold",
                    path_effects=outline,
                )
        ax.set(title=f"{title}: {len(names)} {unit}", xticks=[], yticks=[])
        ax.set(xlabel="UMAP 1", ylabel="UMAP 2")
    return figure


def trace_figure(trace: list[dict]) -> Figure:
    """Clusters and resolution per iteration, each rejected iteration marked with its failing
    pair."""
    steps = np.arange(1, len(trace) + 1)
    figure = _figure(7.5, 3.6)
    ax = figure.subplots()
    ax.plot(steps, [it["n_clusters"] for it in trace], "o-", color="C0", label="clusters")
    for step, it in zip(steps, trace, strict=True):
        if len(it["failing_pair"]):
            a, b = it["failing_pair"]
            ax.annotate(
                f"{a}-{b}",
                (step, it["n_clusters"]),
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                fontsize=8,
                color="C3",
            )
    ax.set(xlabel="iteration", ylabel="clusters", xticks=steps)
    ax.margins(y=0.2)
    twin = ax.twinx()
    twin.plot(steps, [it["resolution"] for it in trace], "s--", color="C1", label="resolution")
    twin.set_ylabel("resolution")
    figure.legend(loc="outside upper center", ncols=2, frameon=False)
    return figure


def draws_figure(stability: dict) -> Figure:
    """Clusters of every draw at every resolution it ran: filled where the draw passed (every
    pair selects a gene) and so stopped, with how many draws have stopped so far."""
    from matplotlib.ticker import MaxNLocator

    n_clusters = np.asarray(stability["n_clusters"])
    passed = np.asarray(stability["passed"], dtype=bool)
    stopped = np.asarray(stability.get("stopped", passed), dtype=bool)  # older stores: passed
    steps = np.arange(1, n_clusters.shape[0] + 1)
    figure = _figure(7.5, 3.6)
    ax = figure.subplots()
    offsets = np.linspace(-0.25, 0.25, n_clusters.shape[1])
    x = steps[:, None] + offsets[None, :]
    ran = n_clusters >= 0  # -1: the draw had stopped
    failed = ran & ~passed
    ax.scatter(x[failed], n_clusters[failed], facecolors="none", edgecolors="C3", s=18)
    ax.scatter(x[passed], n_clusters[passed], color="C2", s=18)
    for step, row in zip(steps, stopped, strict=True):
        ax.annotate(
            f"{int(row.sum())}/{row.size}",
            (step, n_clusters.max()),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    ax.set(xlabel="iteration", ylabel="clusters per draw", xticks=steps)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.18)
    ax.set_title(
        "each draw until it stops: passed (filled) or some pair selected nothing (open)",
        fontsize=9,
    )
    return figure


def stability_figure(cluster_stability: np.ndarray) -> Figure:
    """Each final cluster's stability: the mean confidence of its cells."""
    k = len(cluster_stability)
    figure = _figure(float(np.clip(1.5 + 0.4 * k, 4, 12)), 3.4)
    ax = figure.subplots()
    bars = ax.bar(np.arange(k), cluster_stability, color=_palette(k))
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set(xticks=np.arange(k), xlabel="recall cluster", ylabel="stability", ylim=(0, 1.1))
    return figure


def confidence_figure(umap: np.ndarray, confidence: np.ndarray) -> Figure:
    """The UMAP coloured by each cell's confidence: the fraction of draws that agree."""
    figure = _figure(5.6, 4.9)
    ax = figure.subplots()
    size = float(np.clip(3e4 / len(umap), 0.2, 12))
    order = np.argsort(-confidence, kind="stable")  # the least confident on top
    points = ax.scatter(
        *umap[order].T,
        c=confidence[order],
        s=size,
        cmap="magma",
        vmin=0,
        vmax=1,
        linewidths=0,
        rasterized=True,
    )
    figure.colorbar(points, ax=ax, label="recall_confidence", shrink=0.8)
    ax.set(title="confidence of each cell", xticks=[], yticks=[], xlabel="UMAP 1")
    ax.set_ylabel("UMAP 2")
    return figure


def selected_heatmap(n_selected: np.ndarray, merged: Sequence[int] = ()) -> Figure:
    """Genes selected for every cluster pair (diagonal blank), counts written in if few; a
    pair with a cluster of ``merged`` (made by merging a failing pair) is starred."""
    from matplotlib import colormaps

    k = n_selected.shape[0]
    side = float(np.clip(1.5 + 0.45 * k, 3.5, 10))
    figure = _figure(side + 1.2, side)
    ax = figure.subplots()
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
    figure.colorbar(image, ax=ax, label="genes selected", shrink=0.8)
    return figure


def sizes_figure(labels: pd.Series) -> Figure:
    """Cells per cluster, in the colours of the UMAP."""
    sizes = labels.value_counts(sort=False).reindex(labels.cat.categories)
    figure = _figure(float(np.clip(1.5 + 0.4 * len(sizes), 4, 12)), 3.4)
    ax = figure.subplots()
    bars = ax.bar(np.arange(len(sizes)), sizes.to_numpy(), color=_palette(len(sizes)))
    ax.bar_label(bars, fontsize=8)
    ax.set(xticks=np.arange(len(sizes)), xlabel="recall cluster", ylabel="cells")
    ax.set_xticklabels(sizes.index.astype(str))
    ax.margins(y=0.12)
    return figure


def composition_figure(composition: np.ndarray, names: Sequence[str]) -> Figure:
    """Each cluster's cells by batch (clusters x batches), as stacked bars of fractions in the
    colours of the batch UMAP, with the cluster's cell count on top."""
    n_clusters, n_batches = composition.shape
    shares = composition / np.maximum(composition.sum(axis=1, keepdims=True), 1)
    figure = _figure(float(np.clip(2.5 + 0.4 * n_clusters, 4.5, 12)), 3.6)
    ax = figure.subplots()
    colours = _palette(n_batches)
    bottom = np.zeros(n_clusters)
    for b in range(n_batches):
        ax.bar(np.arange(n_clusters), shares[:, b], bottom=bottom, color=colours[b], label=names[b])
        bottom += shares[:, b]
    for cluster, cells in enumerate(composition.sum(axis=1)):
        ax.text(cluster, 1.02, f"{cells:,}", ha="center", va="bottom", fontsize=7)
    ax.set(xticks=np.arange(n_clusters), xlabel="recall cluster", ylabel="share of cells")
    ax.set_ylim(0, 1.12)
    figure.legend(fontsize=8, frameon=False, loc="outside right upper")
    return figure
