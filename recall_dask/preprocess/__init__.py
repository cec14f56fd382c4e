"""Preprocessing as ``FindClustersRecall`` calls Seurat: variable genes, normalization, scaling.

``FindVariableFeatures`` ("vst") on the original counts (:mod:`~recall_dask.preprocess.hvg`),
then on the augmented matrix [variable genes | artificial genes] ``NormalizeData`` (library
size 1e4, log1p; :mod:`~recall_dask.preprocess.normalize`) and ``ScaleData`` (mean 0,
variance 1, clipped at 10; :mod:`~recall_dask.preprocess.scale`). Each function is either a
per-block kernel or a streaming pass over row blocks.
"""

from recall_dask.preprocess.hvg import select_variable_genes, top_vst_genes
from recall_dask.preprocess.normalize import (
    augmented_log_normalized,
    log_normalize,
    log_normalized,
)
from recall_dask.preprocess.scale import Scaling, column_moments, feature_scaling

__all__ = [
    "Scaling",
    "augmented_log_normalized",
    "column_moments",
    "feature_scaling",
    "log_normalize",
    "log_normalized",
    "select_variable_genes",
    "top_vst_genes",
]
