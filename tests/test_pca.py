"""Exact PCA from the streamed Gram matrix, against dense oracles."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dask
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import ROW_CHUNKINGS, as_row_chunked

from recall_dask.pca import cell_embeddings, exact, pca_from_gram, principal_components, scaled_gram
from recall_dask.preprocess import feature_scaling


def dense_scaled(x: np.ndarray, scale_max: float) -> np.ndarray:
    """Seurat ScaleData on a dense matrix: z-score with sd (n - 1), constant -> 0, clip."""
    mean = x.mean(axis=0)
    sd = x.std(axis=0, ddof=1)
    z = np.divide(x - mean, sd, out=np.zeros_like(x), where=sd > 0)
    return np.minimum(z, scale_max)


@pytest.fixture
def log_data(rng) -> sp.csr_matrix:
    """Sparse non-negative data with a constant (all-zero) column and outliers that clip."""
    x = rng.poisson(0.3, size=(217, 40)).astype(float)
    x[:, 5] = 0.0
    x[:, 7] = 0.0  # a single nonzero cell scales to ~sqrt(n) > 10: clipped
    x[3, 7] = 40.0
    x[10, 8] = 25.0
    return sp.csr_matrix(np.log1p(x))


@pytest.mark.parametrize("chunks", ROW_CHUNKINGS.values(), ids=ROW_CHUNKINGS.keys())
def test_gram_and_scaling_match_dense(log_data, chunks):
    data = as_row_chunked(log_data, chunks)
    dense = log_data.toarray()
    for scale_max in (10.0, 2.0):
        scaling = feature_scaling(data, scale_max)
        np.testing.assert_allclose(scaling.mean, dense.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(scaling.std, dense.std(axis=0, ddof=1), rtol=1e-10, atol=1e-14)
        z = dense_scaled(dense, scale_max)
        assert (z == scale_max).any(), "fixture must exercise clipping"
        gram = scaled_gram(data, scaling)
        np.testing.assert_allclose(gram, z.T @ z, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunks", ROW_CHUNKINGS.values(), ids=ROW_CHUNKINGS.keys())
def test_embedding_matches_svd(log_data, chunks):
    data = as_row_chunked(log_data, chunks)
    scaling = feature_scaling(data, 2.0)
    pca = pca_from_gram(scaled_gram(data, scaling), n_pcs=6)
    embedding = cell_embeddings(data, scaling, pca).compute()
    z = dense_scaled(log_data.toarray(), 2.0)
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    np.testing.assert_allclose(pca.singular_values, s[:6], rtol=1e-9)
    # Same components up to sign; our signs make the largest loading positive.
    for j in range(6):
        sign = np.sign(vt[j, np.abs(vt[j]).argmax()])
        np.testing.assert_allclose(pca.loadings[:, j], sign * vt[j], atol=1e-8)
        np.testing.assert_allclose(embedding[:, j], sign * u[:, j] * s[j], atol=1e-8)


def test_pca_is_deterministic_in_sign(rng):
    x = rng.normal(size=(60, 8))
    gram = x.T @ x
    first = pca_from_gram(gram, 3).loadings
    flipped = pca_from_gram(gram * 1.0, 3).loadings
    np.testing.assert_array_equal(first, flipped)
    assert (first[np.abs(first).argmax(axis=0), np.arange(3)] > 0).all()


def test_gram_spanning_several_cache_tiles_with_unsorted_columns(rng):
    """Features beyond one Gram tile (256), and rows whose column indices are not sorted."""
    x = sp.random(300, 700, density=0.05, format="csr", random_state=rng) * 3
    for start, stop in zip(x.indptr[:-1], x.indptr[1:], strict=True):  # shuffle each row
        perm = start + rng.permutation(stop - start)
        x.indices[start:stop], x.data[start:stop] = x.indices[perm], x.data[perm]
    x.has_sorted_indices = False
    data = as_row_chunked(x, 37)
    scaling = feature_scaling(data, 2.0)
    z = dense_scaled(x.toarray(), 2.0)
    np.testing.assert_allclose(scaled_gram(data, scaling), z.T @ z, rtol=1e-9, atol=1e-9)


def test_gram_pass_leaves_its_input_unchanged(rng):
    """A persisted matrix with unsorted indices is read again after the Gram pass (by the
    projection and the pair tests), so the pass must sort a copy, never the block's own
    indices: sorted in place, they once moved values into other columns."""
    x = sp.random(300, 40, density=0.2, format="csr", random_state=rng) * 3
    for start, stop in zip(x.indptr[:-1], x.indptr[1:], strict=True):  # reverse each row
        x.indices[start:stop], x.data[start:stop] = (
            x.indices[start:stop][::-1].copy(),
            x.data[start:stop][::-1].copy(),
        )
    x.has_sorted_indices = False
    data = as_row_chunked(x, 37).persist()
    before = data.compute().toarray()
    scaled_gram(data, feature_scaling(data, 10.0))
    np.testing.assert_array_equal(data.compute().toarray(), before)


@pytest.mark.parametrize("ratio", [0.0, np.inf], ids=["BLAS", "sparse"])
def test_dense_and_sparse_gram_paths_agree(log_data, ratio):
    """Blocks dense enough go to BLAS (syrk), the others to the sparse kernel; both give the
    dense oracle's Gram matrix."""
    data = as_row_chunked(log_data, 37)
    scaling = feature_scaling(data, 2.0)
    z = dense_scaled(log_data.toarray(), 2.0)
    with dask.config.set({"recall.dense-gram-ratio": ratio}):
        gram = scaled_gram(data, scaling)
    np.testing.assert_allclose(gram, z.T @ z, rtol=1e-9, atol=1e-9)


def test_draws_side_by_side_take_turns_at_the_gram_pass(log_data, monkeypatch):
    """Draws prepared at once never sum their Gram matrices at the same time, so their
    partials do not hold the workers' memory together; each still gets its own PCA."""
    data = as_row_chunked(log_data, 37)
    scaling = feature_scaling(data, 2.0)
    running, most = [0], [0]
    lock, real_compute = threading.Lock(), exact.compute

    def slow_compute(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)  # wide enough for the other draw to arrive
        try:
            return real_compute(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(exact, "compute", slow_compute)
    with ThreadPoolExecutor(3) as pool:
        pcas = list(pool.map(lambda _: principal_components(data, scaling, 4), range(3)))
    assert most[0] == 1
    want = pca_from_gram(scaled_gram(data, scaling), 4)
    for pca in pcas:
        np.testing.assert_allclose(pca.loadings, want.loadings, atol=1e-10)
