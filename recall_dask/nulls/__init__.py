"""The nulls of the artificial genes: per-gene marginals, the Gaussian copula that ties them
together, and the fitted model that samples them.

:mod:`~recall_dask.nulls.marginals` fits and draws each gene's distribution,
:mod:`~recall_dask.nulls.copula` estimates the gene-gene correlation of the copula nulls, and
:mod:`~recall_dask.nulls.model` fits a :class:`NullModel` to the variable genes' counts in
streaming passes and samples it reproducibly per row chunk. The count quantile kernels
(:mod:`~recall_dask.nulls._kernels`) serve the copula nulls and the simulated counts alike.
"""

from recall_dask.nulls.model import NULL_METHODS, NullModel, fit_null

__all__ = ["NULL_METHODS", "NullModel", "fit_null"]
