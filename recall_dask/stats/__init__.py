"""The statistics of the pair tests: all-pairs rank-sum tests between clusters
(:mod:`~recall_dask.stats.ranksums`, with its numba kernels in
:mod:`~recall_dask.stats._kernels`), and the knockoff statistics and threshold that decide
which genes separate two clusters (:mod:`~recall_dask.stats.knockoff`)."""
