"""Checks that a matrix holds raw counts, and the one canonical form every stage computes on.

Every writer (:func:`~recall_dask.io.counts.ingest`, :func:`~recall_dask.io.tenx.
write_10x_h5`) and :func:`~recall_dask.io.counts.counts_from_anndata` run these checks,
so no stage ever sees negative, non-integer or non-finite counts, counts float32 cannot hold,
or a matrix without cells, genes or counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from recall_dask import config
from recall_dask.errors import InputError
from recall_dask.io.readers import Block, Counts, guarded
from recall_dask.io.storage import Location

logger = logging.getLogger(__name__)

#: Largest count float32 holds exactly (2^24); counts are stored and computed as float32.
MAX_COUNT = 1 << 24


def check_chunk(chunk: Block, where: str) -> int:
    """Raise InputError unless ``chunk`` holds raw counts; return its number of nonzero counts."""
    values = chunk.data if sp.issparse(chunk) else np.asarray(chunk)
    if not np.isfinite(values).all():
        problem = "NaN or infinite values"
    elif (values < 0).any():
        problem = "negative values"
    elif (values != np.round(values)).any():
        problem = "non-integer values"
    elif (values > MAX_COUNT).any():
        problem = f"counts above {MAX_COUNT:,} (float32 cannot hold them exactly)"
    else:
        return int(np.count_nonzero(values))
    raise InputError(f"{where}: {problem} in the count matrix; expected raw integer UMI counts")


def check_totals(n_obs: int, n_vars: int, nnz: int, where: str) -> None:
    """Reject matrices that cannot be clustered: no cells, no genes, or no counts at all."""
    if n_obs == 0 or n_vars == 0:
        raise InputError(f"{where}: empty matrix ({n_obs} cells x {n_vars} genes)")
    if nnz == 0:
        raise InputError(f"{where}: no genes detected (all {n_obs} x {n_vars} counts are zero)")


def canonical_counts(chunk: Block) -> sp.csr_matrix:
    """Any dense or sparse block of counts in the one form every stage computes on: float32
    CSR with sorted column indices, no duplicate entries (they add up, as in Matrix Market)
    and no stored zeros.

    The same counts then give the same answer whatever form they came in. A block already in
    that form comes back sharing its arrays (no stage modifies its input); anything else is
    rebuilt in new arrays, so the caller's matrix is never touched.
    """
    if not sp.issparse(chunk):
        return sp.csr_matrix(np.asarray(chunk), dtype=np.float32)
    csr = chunk.tocsr()
    # Rebuilt from its arrays, the matrix checks its format afresh instead of trusting flags.
    csr = sp.csr_matrix((csr.data, csr.indices, csr.indptr), shape=csr.shape)
    if csr.dtype == np.float32 and csr.has_canonical_format and csr.data.all():
        return csr
    owned = sp.csr_matrix(
        (csr.data.astype(np.float64), csr.indices.copy(), csr.indptr.copy()), shape=csr.shape
    )
    owned.sum_duplicates()  # also sorts the indices
    owned.eliminate_zeros()
    return owned.astype(np.float32)


def check_chunk_size(chunk_size: int) -> None:
    """Reject a chunk size that is not a positive integer."""
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def chunk_rows(chunk_size: int | None) -> int:
    """Cells per row chunk: ``chunk_size``, or the ``recall.chunk-size`` knob if None."""
    rows = config.get("chunk-size") if chunk_size is None else chunk_size
    check_chunk_size(rows)
    return rows


def validated_rows(
    counts: Counts, chunk_size: int, where: Location
) -> Iterator[tuple[str, sp.spmatrix]]:
    """Each row chunk with its cells' label, checked as raw counts of the listed genes.

    Once the chunks are exhausted, checks that they cover every listed cell and that the
    matrix is not empty, so a writer that consumes them all has written valid counts.
    """
    n_obs, n_vars = len(counts.obs), len(counts.var)
    n_rows = nnz = 0
    for chunk in guarded(counts.rows(chunk_size), where):
        cells = f"{where} (cells {n_rows}-{n_rows + chunk.shape[0] - 1})"
        nnz += check_chunk(chunk, cells)
        if chunk.shape[1] != n_vars:
            raise InputError(f"{cells}: {chunk.shape[1]} genes in the matrix, {n_vars} listed")
        yield cells, chunk
        n_rows += chunk.shape[0]
        if n_rows * 10 // max(n_obs, 1) > (n_rows - chunk.shape[0]) * 10 // max(n_obs, 1):
            logger.info("read %d of %d cells of %s", n_rows, n_obs, where)
    if n_rows != n_obs:
        raise InputError(f"{where}: {n_rows} cells in the matrix, {n_obs} barcodes listed")
    check_totals(n_obs, n_vars, nnz, str(where))
