"""Exact PCA of the scaled data from a streamed Gram matrix (:mod:`~recall_dask.pca.exact`),
with the numba kernels that accumulate it beside it (:mod:`~recall_dask.pca._kernels`)."""

from recall_dask.pca.exact import (
    PCA,
    cell_embeddings,
    pca_from_gram,
    principal_components,
    scaled_gram,
)

__all__ = ["PCA", "cell_embeddings", "pca_from_gram", "principal_components", "scaled_gram"]
