"""Counts in, results out: every input format streamed into one row-chunked Zarr store.

Readers (:mod:`~recall_dask.io.readers`, one per format) turn a path into annotations and row
chunks; :mod:`~recall_dask.io.validate` checks each chunk as raw counts and puts it in the
canonical form every stage computes on; :mod:`~recall_dask.io.counts` writes the chunks
into an AnnData Zarr store and reads them back lazily, as dask arrays whose tasks read the
store themselves; :mod:`~recall_dask.io.results` stores a run's results next to the counts.
:mod:`~recall_dask.io.storage` names local paths and fsspec URLs, and
:mod:`~recall_dask.io.workstore` keeps the normalized matrices of a run while it lasts.
:mod:`~recall_dask.io.tenx` writes Cell Ranger ``.h5`` files (for simulated data).
Long runs: :mod:`~recall_dask.io.lock` keeps one writer per store, :mod:`~recall_dask.io.space`
reports a full disk in one line, and :mod:`~recall_dask.io.integrity` names a missing or
corrupt chunk of an input store.
"""

from recall_dask.io.counts import (
    counts_from_anndata,
    ingest,
    open_counts,
    write_stream,
)
from recall_dask.io.readers import BUNDLED_PBMC3K
from recall_dask.io.results import read_results, write_labels_csv, write_results
from recall_dask.io.tenx import write_10x_h5
from recall_dask.io.validate import MAX_COUNT, canonical_counts

__all__ = [
    "BUNDLED_PBMC3K",
    "MAX_COUNT",
    "canonical_counts",
    "counts_from_anndata",
    "ingest",
    "open_counts",
    "read_results",
    "write_10x_h5",
    "write_labels_csv",
    "write_results",
    "write_stream",
]
