"""recall_dask: knockoff-calibrated single-cell clustering on Dask.

The public API is imported on first use (module ``__getattr__``), so that ``import
recall_dask`` and the command line's ``--help`` start without loading dask, numba or anndata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from recall_dask.api import recall

__all__ = ["recall", "__version__"]


def __getattr__(name: str) -> object:
    if name == "recall":
        from recall_dask.api import recall

        return recall
    raise AttributeError(f"module 'recall_dask' has no attribute {name!r}")
