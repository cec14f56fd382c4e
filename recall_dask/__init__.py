"""recall_dask: knockoff-calibrated single-cell clustering on Dask.

The public API is imported on first use (module ``__getattr__``), so that ``import
recall_dask`` and the command line's ``--help`` start without loading dask, numba, anndata
or matplotlib: :func:`recall` and the plots of a finished run, ``recall_dask.pl``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from recall_dask import pl
    from recall_dask.api import recall

__all__ = ["pl", "recall", "__version__"]


def __getattr__(name: str) -> object:
    if name == "recall":
        from recall_dask.api import recall

        return recall
    if name == "pl":
        import importlib

        return importlib.import_module("recall_dask.pl")
    raise AttributeError(f"module 'recall_dask' has no attribute {name!r}")
