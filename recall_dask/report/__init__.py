"""An HTML report of a recall run, to decide from pictures whether the clusters hold.

One self-contained page from a store that ``recall-dask run`` wrote: figures as base64 PNG,
inline CSS, no scripts, nothing fetched. It shows a UMAP coloured by the initial and the
calibrated clusters (and, on request, by the standard clustering without artificial genes),
the iteration trace with each iteration's failing pair, the selected-gene counts of the final
cluster pairs, the cluster sizes, each pair's strongest knockoff-selected genes as marker
candidates, and the parameters and versions.

The UMAP (``obsm['X_recall_umap']``) and the standard clustering (``obs['recall_default']``;
named after ``key_added``, see :class:`~recall_dask.io.results.ResultKeys`) are computed once
and stored in the store, so that a second report reuses them. Plotting needs the ``report``
extra (umap-learn, matplotlib).

:mod:`~recall_dask.report.build` writes the report of a store (:func:`write_report`),
:mod:`~recall_dask.report.page` renders the page and :mod:`~recall_dask.report.figures` draws
its figures with the plots of :mod:`recall_dask.pl`.
"""

from recall_dask.report.build import (
    UMAP_OPTIONS,
    default_clusters,
    report_path_for,
    require_extra,
    umap_embedding,
    write_report,
)
from recall_dask.report.figures import embedding_figure, plot_figure, png_data_uri
from recall_dask.report.page import render_report

__all__ = [
    "UMAP_OPTIONS",
    "default_clusters",
    "embedding_figure",
    "plot_figure",
    "png_data_uri",
    "render_report",
    "report_path_for",
    "require_extra",
    "umap_embedding",
    "write_report",
]
