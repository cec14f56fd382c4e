"""Log-normalization of the original genes, for the standard clustering without recall."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ROW_CHUNKINGS, as_row_chunked

from recall_dask.preprocess import log_normalized


@pytest.mark.parametrize("chunks", ROW_CHUNKINGS.values(), ids=ROW_CHUNKINGS.keys())
def test_log_normalized_divides_by_the_library_size_of_all_genes(rng, chunks):
    counts = rng.poisson(0.7, size=(217, 40)).astype(float)
    counts[5] = 0  # an empty cell stays zero
    genes = np.array([0, 3, 4, 17, 39])
    library = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(library > 0, np.log1p(counts * 1e4 / library), 0.0)[:, genes]
    lazy = log_normalized(as_row_chunked(sp.csr_matrix(counts), chunks), genes, 1e4)
    assert lazy.shape == (217, genes.size)
    np.testing.assert_allclose(lazy.compute().toarray(), expected, rtol=1e-12)
