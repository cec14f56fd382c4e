"""The Zarr work store: tiles written by row chunk read back exactly, by rows and by features."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ROW_CHUNKINGS, as_row_chunked

from recall_dask.workstore import work_store, write_tiles


@pytest.fixture
def matrix(rng) -> sp.csr_matrix:
    m = sp.random(217, 45, density=0.15, format="csr", random_state=rng, dtype=np.float64)
    m[51:150] = 0  # whole row chunks without a nonzero
    m.eliminate_zeros()
    return m


@pytest.mark.parametrize("chunks", ROW_CHUNKINGS.values(), ids=ROW_CHUNKINGS.keys())
@pytest.mark.parametrize("feature_block", [1, 7, 45, 100])
def test_tiles_read_back_the_matrix(tmp_path, matrix, chunks, feature_block):
    stored = write_tiles(as_row_chunked(matrix, chunks), tmp_path / "w.zarr", feature_block)
    rows, tiles = stored.by_rows(), stored.by_tiles()
    width = min(feature_block, matrix.shape[1])
    assert tiles.chunks[1][0] == width and sum(tiles.chunks[1]) == matrix.shape[1]
    assert rows.chunks[0] == tiles.chunks[0] == as_row_chunked(matrix, chunks).chunks[0]
    assert len(rows.chunks[1]) == 1
    for read in (rows, tiles):
        whole = read.compute()
        assert sp.issparse(whole) and whole.dtype == np.float64
        assert (whole != matrix).nnz == 0
    last_rows = rows.blocks[-1].compute()
    assert (last_rows != matrix[-last_rows.shape[0] :]).nnz == 0
    last_features = tiles.blocks[:, -1].compute()
    assert (last_features != matrix[:, sum(tiles.chunks[1][:-1]) :]).nnz == 0


def test_work_store_is_removed_even_on_failure(tmp_path, matrix):
    with pytest.raises(RuntimeError), work_store(tmp_path) as work:
        store = work / "tiles.zarr"
        write_tiles(as_row_chunked(matrix, 37), store, 10).by_rows().compute()
        assert work.parent == tmp_path and store.exists()
        raise RuntimeError("worker lost")
    assert list(tmp_path.iterdir()) == []
