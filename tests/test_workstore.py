"""The Zarr work store: tiles written by row chunk read back exactly, by rows and by features."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ROW_CHUNKINGS, as_row_chunked

from recall_dask.io.workstore import _read_groups, work_store, write_tiles


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
    rows, blocks = stored.by_rows(), stored.by_feature_blocks()
    width = min(feature_block, matrix.shape[1])
    assert blocks.chunks[1][0] == width and sum(blocks.chunks[1]) == matrix.shape[1]
    assert rows.chunks[0] == as_row_chunked(matrix, chunks).chunks[0]
    assert blocks.chunks[0] == (matrix.shape[0],)  # each feature block whole, for all cells
    assert len(rows.chunks[1]) == 1
    for read in (rows, blocks):
        whole = read.compute()
        assert sp.issparse(whole) and whole.dtype == np.float64
        assert (whole != matrix).nnz == 0
    last_rows = rows.blocks[-1].compute()
    assert (last_rows != matrix[-last_rows.shape[0] :]).nnz == 0
    last_features = blocks.blocks[:, -1].compute()
    assert (last_features != matrix[:, sum(blocks.chunks[1][:-1]) :]).nnz == 0


def test_work_store_is_removed_even_on_failure(tmp_path, matrix):
    with pytest.raises(RuntimeError), work_store(tmp_path) as work:
        store = work / "tiles.zarr"
        write_tiles(as_row_chunked(matrix, 37), store, 10).by_rows().compute()
        assert work.parent == tmp_path and store.exists()
        raise RuntimeError("worker lost")
    assert list(tmp_path.iterdir()) == []


def test_tiles_are_read_in_few_tight_boxes():
    """Row chunks whose tiles sit side by side share a read, up to 64 of them; a row chunk
    whose tile lies far off (the box would be mostly other entries) starts a read of its own."""
    first = np.array([0, 10, 5, 200_000, 20])
    last = first + 100
    assert list(_read_groups(first, last)) == [range(0, 3), range(3, 4), range(4, 5)]
    many = list(_read_groups(np.zeros(130, dtype=np.int64), np.full(130, 10)))
    assert many == [range(0, 64), range(64, 128), range(128, 130)]
