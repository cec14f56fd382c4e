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
its figures.
"""

from recall_dask.report.build import (
    UMAP_OPTIONS,
    default_clusters,
    report_path_for,
    require_extra,
    umap_embedding,
    write_report,
)
from recall_dask.report.figures import (
    confidence_figure,
    draws_figure,
    png_data_uri,
    selected_heatmap,
    sizes_figure,
    stability_figure,
    trace_figure,
    umap_figure,
)
from recall_dask.report.page import final_selected, iteration_trace, render_report

__all__ = [
    "UMAP_OPTIONS",
    "confidence_figure",
    "default_clusters",
    "draws_figure",
    "final_selected",
    "iteration_trace",
    "png_data_uri",
    "render_report",
    "report_path_for",
    "require_extra",
    "selected_heatmap",
    "sizes_figure",
    "stability_figure",
    "trace_figure",
    "umap_embedding",
    "umap_figure",
    "write_report",
]
