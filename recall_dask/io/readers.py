"""Readers: one per input format, each turning a path into annotations and row chunks.

A reader only turns a path into cell and gene annotations (``obs``, ``var``) plus an iterator
of row chunks of counts (:class:`Counts`); what it reads is validated and written by the
writers (:mod:`recall_dask.io.counts`, :mod:`recall_dask.io.tenx`), which do not know
where the chunks came from. :func:`reader_for` picks the reader from what a path is: a Cell
Ranger matrix folder, a Cell Ranger ``.h5``, an ``.h5ad`` or an AnnData ``.zarr`` store. Zarr
stores may be local paths or fsspec URLs (:mod:`recall_dask.io.storage`); the other formats
are read from local disk.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
import zarr
from anndata.io import read_elem, sparse_dataset

from recall_dask.errors import InputError
from recall_dask.io.integrity import check_sparse_chunks, naming_corrupt_chunks
from recall_dask.io.storage import Location

#: The bundled 10x PBMC 3k data (CC BY 4.0): a Cell Ranger matrix folder.
BUNDLED_PBMC3K: Path = Path(__file__).resolve().parent.parent / "data" / "pbmc3k"

# What reading a damaged or foreign file raises, across gzip, scipy, pandas, h5py and zarr.
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zlib.error)

Block = np.ndarray | sp.spmatrix | sp.sparray


@dataclass(frozen=True)
class Counts:
    """A readable input: annotations in memory, and row chunks of counts on demand.

    ``rows(chunk_size)`` opens the input itself, so no file handle outlives the iteration.
    """

    obs: pd.DataFrame
    var: pd.DataFrame
    rows: Callable[[int], Iterator[Block]]


@contextmanager
def reading(path: Path | Location) -> Iterator[None]:
    """Report a damaged or unreadable input as one InputError line naming the path."""
    try:
        yield
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


def guarded(chunks: Iterator[Block], path: Location) -> Iterator[Block]:
    """Read errors while iterating become InputErrors; errors of the consumer stay as they are."""
    with reading(path):
        yield from chunks


def _row_slices(matrix: Any, chunk_size: int) -> Iterator[Block]:
    """Yield consecutive row slices of anything sliceable: arrays, CSR matrices, h5/zarr arrays."""
    for start in range(0, matrix.shape[0], chunk_size):
        yield matrix[start : start + chunk_size]


def csr_rows(group: Any, start: int, stop: int, n_cols: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of a CSR matrix stored as data/indices/indptr arrays (h5py or
    zarr) without anndata's encoding, reading only their entries."""
    indptr = group["indptr"][start : stop + 1].astype(np.int64)
    lo, hi = int(indptr[0]), int(indptr[-1])
    parts = (group["data"][lo:hi], group["indices"][lo:hi], indptr - lo)
    return sp.csr_matrix(parts, shape=(stop - start, n_cols))


def _csr_group_rows(group: Any, shape: Sequence[int], chunk_size: int) -> Iterator[sp.csr_matrix]:
    """Stream a CSR matrix stored as data/indices/indptr arrays without anndata's encoding,
    one chunk of rows at a time; a damaged chunk is named."""
    n_rows, n_cols = (int(n) for n in shape)
    for start in range(0, n_rows, chunk_size):
        stop = min(start + chunk_size, n_rows)
        with naming_corrupt_chunks(group, start, stop):
            rows = csr_rows(group, start, stop, n_cols)
        yield rows


def _gene_table(
    ids: Sequence[str], symbols: Sequence[str], types: Sequence[str] | None
) -> pd.DataFrame:
    """Genes indexed by unique symbols (anndata's ``var_names_make_unique``), ids kept aside."""
    var = pd.DataFrame({"gene_ids": np.asarray(ids, dtype=str)})
    if types is not None:
        var["feature_types"] = np.asarray(types, dtype=str)
    var.index = ad.utils.make_index_unique(pd.Index(np.asarray(symbols, dtype=str)))
    return var


def _cell_table(barcodes: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(index=pd.Index(np.asarray(barcodes, dtype=str)))


def _no_layer(layer: str | None, path: Location) -> None:
    if layer is not None:
        raise InputError(f"{path}: layer={layer!r} applies only to .h5ad and .zarr inputs")


def _first_existing(folder: Path, names: Sequence[str], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder}: no {what} file ({' or '.join(names)})")


def _read_tsv(path: Path) -> pd.DataFrame:
    """A headerless tab-separated table (gz or plain); an empty file is an empty table."""
    try:
        return pd.read_csv(path, sep="\t", header=None, dtype=str)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=[0])


def _read_mtx_dir(source: Location, layer: str | None) -> Counts:
    """Cell Ranger matrix folder: matrix.mtx is genes x cells; features.tsv (v3) or genes.tsv (v2).

    MatrixMarket is unordered text, so the matrix is parsed whole before rows are sliced.
    """
    _no_layer(layer, source)
    path = Path(source.path)
    genes = _read_tsv(_first_existing(path, _GENE_FILES, "features/genes"))
    barcodes = _read_tsv(_first_existing(path, _BARCODE_FILES, "barcodes"))
    matrix_path = _first_existing(path, _MTX_FILES, "matrix")
    symbols = genes[min(1, genes.shape[1] - 1)]
    var = _gene_table(genes[0], symbols, genes[2] if genes.shape[1] > 2 else None)

    def rows(chunk_size: int) -> Iterator[Block]:
        cells = sp.csr_matrix(scipy.io.mmread(matrix_path).T)
        yield from _row_slices(cells, chunk_size)

    return Counts(_cell_table(barcodes[0]), var, rows)


def _10x_group(file: h5py.File, path: Location) -> str:
    """Name of the matrix group: ``matrix`` (v3), or the single genome group (v2)."""
    if "matrix" in file:
        return "matrix"
    genomes = [name for name, item in file.items() if isinstance(item, h5py.Group)]
    if len(genomes) != 1 or "genes" not in file[genomes[0]]:
        raise InputError(f"{path}: not a Cell Ranger .h5 (no 'matrix' group)")
    return genomes[0]


def _read_10x_h5(source: Location, layer: str | None) -> Counts:
    """Cell Ranger .h5: CSC genes x cells, i.e. CSR cells x genes, streamed by cells."""
    _no_layer(layer, source)
    path = source.path
    with h5py.File(path, "r") as file:
        name = _10x_group(file, source)
        group = file[name]
        n_genes, n_cells = group["shape"][:]
        barcodes = group["barcodes"].asstr()[:]
        if "features" in group:
            ids, symbols, types = (group[f"features/{k}"] for k in ("id", "name", "feature_type"))
            var = _gene_table(ids.asstr()[:], symbols.asstr()[:], types.asstr()[:])
        else:
            var = _gene_table(group["genes"].asstr()[:], group["gene_names"].asstr()[:], None)

    def rows(chunk_size: int) -> Iterator[Block]:
        with h5py.File(path, "r") as file:
            yield from _csr_group_rows(file[name], (n_cells, n_genes), chunk_size)

    return Counts(_cell_table(barcodes), var, rows)


def _csc_element_rows(elem: Any, chunk_size: int) -> Iterator[Block]:
    """CSC cannot be read by rows, so it is loaded whole (in memory) and converted once."""
    return _row_slices(sp.csr_matrix(read_elem(elem)), chunk_size)


def _csr_element_rows(elem: Any, chunk_size: int) -> Iterator[Block]:
    """Row chunks of an anndata CSR element, read by anndata's sparse_dataset (indptr
    uncached: each chunk reads only its part); a damaged chunk is named."""
    matrix = sparse_dataset(elem, should_cache_indptr=False)
    for start in range(0, matrix.shape[0], chunk_size):
        stop = min(start + chunk_size, matrix.shape[0])
        with naming_corrupt_chunks(elem, start, stop):
            rows = matrix[start:stop]
        yield rows


# Row-chunk readers of anndata-encoded matrix elements, by their encoding-type.
_ELEMENT_ROWS: dict[str, Callable[[Any, int], Iterator[Block]]] = {
    "csr_matrix": _csr_element_rows,
    "csc_matrix": _csc_element_rows,
    "array": _row_slices,
}


def _anndata_reader(
    open_root: Callable[[Location], Any],
) -> Callable[[Location, str | None], Counts]:
    """Reader for an AnnData container (h5ad or zarr) given how to open its root group."""

    def read(path: Location, layer: str | None) -> Counts:
        key = "X" if layer is None else f"layers/{layer}"
        with open_root(path) as root:
            if key not in root:
                raise InputError(f"{path}: no {key} matrix in this AnnData file")
            encoding = root[key].attrs.get("encoding-type")
            if encoding not in _ELEMENT_ROWS:
                raise InputError(f"{path}: {key} has unsupported encoding {encoding!r}")
            if encoding != "array" and isinstance(root[key], zarr.Group):
                check_sparse_chunks(path, root[key])
            obs, var = read_elem(root["obs"]), read_elem(root["var"])

        def rows(chunk_size: int) -> Iterator[Block]:
            with open_root(path) as root:
                yield from _ELEMENT_ROWS[encoding](root[key], chunk_size)

        return Counts(obs, var, rows)

    return read


def _open_h5ad(source: Location) -> h5py.File:
    return h5py.File(source.path, "r")


def _open_zarr(source: Location) -> nullcontext:
    return nullcontext(source.open_group("r"))


_read_zarr = _anndata_reader(_open_zarr)


_MTX_FILES = ("matrix.mtx.gz", "matrix.mtx")
_GENE_FILES = ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv")
_BARCODE_FILES = ("barcodes.tsv.gz", "barcodes.tsv")
# Directories are recognised by a marker file inside them, files by their suffix.
_DIR_READERS = {
    "matrix.mtx.gz": _read_mtx_dir,
    "matrix.mtx": _read_mtx_dir,
    "zarr.json": _read_zarr,
    ".zgroup": _read_zarr,
}
_FILE_READERS = {".h5": _read_10x_h5, ".h5ad": _anndata_reader(_open_h5ad)}


def reader_for(path: Location) -> Callable[[Location, str | None], Counts]:
    """Pick the reader for ``path`` from what it is; unknown inputs are an InputError.

    Only AnnData Zarr stores are read from URLs; the other formats from local disk.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.isdir():
        reader = next((r for m, r in _DIR_READERS.items() if path.child(m).isfile()), None)
        if reader is None:
            raise InputError(f"{path}: directory holds neither matrix.mtx[.gz] nor a Zarr store")
    else:
        reader = _FILE_READERS.get(path.suffix)
        if reader is None:
            raise InputError(
                f"{path}: unknown input format {path.suffix!r}; expected a Cell Ranger folder, "
                ".h5, .h5ad or .zarr"
            )
    if reader is not _read_zarr and not path.is_local:
        raise InputError(
            f"{path}: only AnnData .zarr stores are read from URLs; copy Cell Ranger and .h5ad "
            "inputs to a local disk"
        )
    return reader
