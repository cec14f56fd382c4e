"""recall_dask: knockoff-calibrated single-cell clustering on Dask."""

__version__ = "0.1.0"
