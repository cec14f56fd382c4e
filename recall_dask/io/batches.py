"""Each cell's batch (sample, donor, lane, plate, protocol), taken at the edge and checked once.

Batches come from an obs column (``--batch-key``, Python ``batch_key=``) of an h5ad or zarr
input or of an in-memory AnnData; for Cell Ranger inputs, which have no obs, from a CSV of
``barcode,batch`` (``--batches CSV``) or from the ``-N`` suffix that ``cellranger aggr``
appends to each barcode (``--batches barcode-suffix``). Whatever the source, the labels
become :class:`Batches`: integer codes per cell and the batch names, sorted, so the same
labels give the same codes whatever their order of appearance. Every problem is one
:class:`~recall_dask.errors.InputError` naming it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recall_dask.errors import InputError

logger = logging.getLogger(__name__)

#: ``--batches`` value that takes each cell's batch from its ``cellranger aggr`` suffix.
BARCODE_SUFFIX = "barcode-suffix"
_SUFFIX = re.compile(r"-(\d+)$")


@dataclass(frozen=True, eq=False)
class Batches:
    """The batch of every cell: ``codes[i]`` indexes ``names``; ``key`` says where the labels
    came from (the obs column, or the name the run records them under)."""

    key: str
    names: np.ndarray
    codes: np.ndarray

    @property
    def n_batches(self) -> int:
        return self.names.size

    def sizes(self) -> np.ndarray:
        """Cells per batch."""
        return np.bincount(self.codes, minlength=self.n_batches)

    def summary(self, shown: int = 8) -> str:
        """The batches and their cells, for progress lines (the first ``shown`` batches)."""
        listed = ", ".join(
            f"{name} ({cells:,} cells)"
            for name, cells in zip(self.names[:shown], self.sizes()[:shown], strict=False)
        )
        more = f" and {self.n_batches - shown} more" if self.n_batches > shown else ""
        return f"batch key {self.key!r}: {self.n_batches} batches, {listed}{more}"

    def labels(self, index: pd.Index) -> pd.Series:
        """The batches as the categorical column a store keeps."""
        return pd.Series(pd.Categorical.from_codes(self.codes, categories=self.names), index=index)

    @classmethod
    def of(cls, key: str, labels: pd.Series | np.ndarray, k_neighbors: int) -> Batches | None:
        """Checked batches from one label per cell; ``None``, with a warning, for a single
        batch (the run is then the run without batches).

        Missing labels (NaN, None, empty) and a batch with fewer cells than ``k_neighbors``
        (too few to find its cells' neighbors among themselves) are errors.
        """
        labels = pd.Series(labels, copy=False)
        missing = labels.isna() | (labels.astype(str).str.strip() == "")
        if missing.any():
            first = labels.index[np.flatnonzero(missing.to_numpy())[0]]
            raise InputError(
                f"batch key {key!r}: {int(missing.sum())} cells have no batch (the first: {first})"
            )
        names, codes = np.unique(labels.astype(str).to_numpy(), return_inverse=True)
        if names.size == 1:
            logger.warning(
                "batch key %r has a single batch (%s): running without batches", key, names[0]
            )
            return None
        batches = cls(key, names, codes.astype(np.int64))
        small = np.flatnonzero(batches.sizes() < k_neighbors)
        if small.size:
            listed = ", ".join(f"{names[b]} ({batches.sizes()[b]} cells)" for b in small)
            raise InputError(
                f"batch key {key!r}: batches with fewer cells than --k-neighbors "
                f"({k_neighbors}): {listed}"
            )
        return batches


def obs_batches(obs: pd.DataFrame, key: str) -> pd.Series:
    """The batch column ``key`` of ``obs``, or one line naming the columns there are."""
    if key not in obs.columns:
        columns = ", ".join(map(str, obs.columns)) or "none"
        raise InputError(f"--batch-key {key!r} is not a column of obs (columns: {columns})")
    return obs[key]


def csv_batches(path: str | os.PathLike, obs_names: pd.Index) -> pd.Series:
    """The batch of every cell from a ``barcode,batch`` CSV that names each cell once."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise InputError(f"--batches: cannot read {path}: {error}") from error
    if list(table.columns[:2]) != ["barcode", "batch"]:
        raise InputError(f"--batches {path}: expected the columns barcode,batch")
    repeated = table["barcode"][table["barcode"].duplicated()]
    if len(repeated):
        raise InputError(f"--batches {path}: barcode {repeated.iloc[0]} is listed twice")
    batches = table.set_index("barcode")["batch"]
    unknown = batches.index.difference(obs_names)
    if len(unknown):
        raise InputError(
            f"--batches {path}: {len(unknown)} barcodes are not cells of the input "
            f"(the first: {unknown[0]})"
        )
    missing = obs_names.difference(batches.index)
    if len(missing):
        raise InputError(
            f"--batches {path}: {len(missing)} cells have no batch (the first: {missing[0]})"
        )
    return batches.reindex(obs_names)


def suffix_batches(obs_names: pd.Index) -> pd.Series:
    """The batch of every cell from the ``-N`` suffix of its barcode (``cellranger aggr``)."""
    suffixes = obs_names.to_series().str.extract(_SUFFIX, expand=False)
    if suffixes.isna().any():
        first = suffixes.index[suffixes.isna().to_numpy()][0]
        raise InputError(
            f"--batches {BARCODE_SUFFIX}: barcode {first} has no -N suffix (cellranger aggr "
            "appends one to every barcode)"
        )
    return suffixes
