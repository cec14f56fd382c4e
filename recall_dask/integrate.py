"""Batch correction of the gathered embedding, between the PCA and the neighbor graph: Harmony
(Korsunsky et al., Nature Methods 2019), through harmonypy, the implementation behind scanpy's
``harmony_integrate``.

The embedding of the augmented data (cells x PCs, genes and artificial genes alike) is small
enough to correct in memory in the client. Harmony moves each cell's PCs towards the centroids
of soft clusters that mix the batches, so that batches that hold the same cell types overlap
in the graph; a cell type found in one batch only keeps its own region. With ``--draws``,
each draw's embedding is corrected on its own. Harmony's k-means starts are seeded, and its
result does not depend on its number of threads, so the same embedding gives the same
correction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recall_dask.errors import InputError
from recall_dask.io.batches import Batches


def harmonized(embedding: np.ndarray, batches: Batches) -> np.ndarray:
    """The embedding (cells x PCs) corrected for ``batches`` by Harmony, with its defaults
    (theta 2, sigma 0.1, min(cells / 30, 100) clusters, k-means seed 0)."""
    try:
        import harmonypy
    except ImportError as error:
        raise InputError(
            "--batch-key needs harmonypy: pip install 'recall-dask[batches]'"
        ) from error
    meta = pd.DataFrame({"batch": batches.names[batches.codes]})
    result = harmonypy.run_harmony(
        np.ascontiguousarray(embedding, dtype=np.float64),
        meta,
        "batch",
        verbose=False,
        random_state=0,
    )
    corrected = np.asarray(result.Z_corr, dtype=np.float64)
    return corrected if corrected.shape == embedding.shape else corrected.T
