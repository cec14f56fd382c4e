"""Plots of a finished run, in scanpy's style, for notebooks and for the HTML report.

Each function takes the AnnData that holds the run's results (an in-memory AnnData after
:func:`recall_dask.recall`, or ``anndata.read_zarr`` of a store that ``recall-dask run``
wrote) and the ``key_added`` the run wrote them under, draws on ``ax`` if given (else on a
new pyplot figure, which a notebook shows), and returns the axes. The HTML report
(:mod:`recall_dask.report`) draws its figures with these same functions.

Plotting needs matplotlib (the ``report`` extra), imported on first use, so that ``import
recall_dask`` does not load it. A plot of something the run did not compute (the stability
of a single draw, the marker candidates of count splitting, the batches of a run without
them) raises :class:`~recall_dask.errors.InputError` with one line saying why.
"""

from recall_dask.pl._calibration import calibration
from recall_dask.pl._clusters import composition, embedding, sizes
from recall_dask.pl._pairs import markers, selected_genes
from recall_dask.pl._stability import confidence, stability

__all__ = [
    "calibration",
    "composition",
    "confidence",
    "embedding",
    "markers",
    "selected_genes",
    "sizes",
    "stability",
]
