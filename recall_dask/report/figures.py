"""The report's figures: the plots of :mod:`recall_dask.pl`, each drawn on a figure of the
report's size by Agg, apart from pyplot's global state, and inlined in the page as base64 PNG
(:func:`png_data_uri`)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from io import BytesIO
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np

from recall_dask import pl
from recall_dask.io.results import ResultKeys

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


def _by_clusters(n: int, base: float, per: float, low: float, high: float) -> float:
    """A figure side that grows with the number of clusters, within bounds."""
    return float(np.clip(base + per * n, low, high))


def plot_figure(
    plot: Callable[..., object], adata: ad.AnnData, keys: ResultKeys, **options: object
) -> Figure:
    """One plot of :mod:`recall_dask.pl` of the run under ``keys``, at the report's size."""
    k = len(adata.obs[keys.labels].cat.categories)
    sizes = {
        pl.calibration: (7.5, 3.6),
        pl.selected_genes: (
            _by_clusters(k, 2.7, 0.45, 4.7, 11.2),
            _by_clusters(k, 1.5, 0.45, 3.5, 10),
        ),
        pl.sizes: (_by_clusters(k, 1.5, 0.4, 4, 12), 3.4),
        pl.stability: (_by_clusters(k, 1.5, 0.4, 4, 12), 3.4),
        pl.confidence: (5.6, 4.9),
        pl.composition: (_by_clusters(k, 3.5, 0.4, 5.5, 13), 3.6),
        pl.embedding: (4.6, 4.9),
    }
    figure = _figure(*sizes[plot])
    plot(adata, keys.record, ax=figure.subplots(), **options)
    return figure


def embedding_figure(
    adata: ad.AnnData, keys: ResultKeys, panels: dict[str, str], basis: str | None = None
) -> Figure:
    """One :func:`recall_dask.pl.embedding` panel per labelling, side by side: ``panels``
    maps each panel's title to its obs column."""
    figure = _figure(4.6 * len(panels), 4.9)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, column) in zip(axes, panels.items(), strict=True):
        pl.embedding(adata, keys.record, color=column, basis=basis, title=title, ax=ax)
    return figure
