"""The calibration trace: how the resolution loop went, with one draw or several."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anndata as ad
import numpy as np

from recall_dask.choices import DEFAULT_KEY
from recall_dask.pl._axes import axes_or_new, iteration_trace, run_results

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def calibration(adata: ad.AnnData, key_added: str = DEFAULT_KEY, *, ax: Axes | None = None) -> Axes:
    """Clusters against resolution, iteration by iteration, of the run under ``key_added``.

    With one draw: the clusters and the resolution of every iteration (the resolution on a
    second y axis), each rejected iteration marked with its failing pair, the pair of clusters
    that selected no gene. With ``--draws``: every draw's clusters at every resolution it ran,
    filled where the draw passed (every pair selected a gene) and so stopped, open where some
    pair selected nothing, with how many draws had stopped above each resolution.

    Draws on ``ax`` if given, else on a new figure; returns the axes.
    """
    _, record = run_results(adata, key_added)
    trace = iteration_trace(record)
    if "stability" in record:
        return _draws(record["stability"], trace, ax)
    return _single_draw(trace, ax)


def _single_draw(trace: list[dict], ax: Axes | None) -> Axes:
    ax = axes_or_new(ax, 7.5, 3.6)
    steps = np.arange(1, len(trace) + 1)
    clusters = ax.plot(steps, [it["n_clusters"] for it in trace], "o-", color="C0")
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
    resolution = twin.plot(steps, [it["resolution"] for it in trace], "s--", color="C1")
    twin.set_ylabel("resolution")
    ax.legend(
        [*clusters, *resolution],
        ["clusters", "resolution"],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncols=2,
        frameon=False,
    )
    return ax


def _draws(stability: dict, trace: list[dict], ax: Axes | None) -> Axes:
    from matplotlib.ticker import MaxNLocator

    ax = axes_or_new(ax, 7.5, 3.6)
    n_clusters = np.asarray(stability["n_clusters"])
    passed = np.asarray(stability["passed"], dtype=bool)
    stopped = np.asarray(stability.get("stopped", passed), dtype=bool)  # older stores: passed
    steps = np.arange(1, n_clusters.shape[0] + 1)
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
    ax.set(xlabel="resolution", ylabel="clusters per draw", xticks=steps)
    ax.set_xticklabels([f"{it['resolution']:.3g}" for it in trace])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.18)
    ax.set_title(
        "each draw until it stops: passed (filled) or some pair selected nothing (open)",
        fontsize=9,
    )
    return ax
