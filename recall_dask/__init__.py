"""recall_dask: knockoff-calibrated single-cell clustering on Dask."""

__version__ = "0.1.0"

from recall_dask.api import recall  # noqa: E402

__all__ = ["recall", "__version__"]
