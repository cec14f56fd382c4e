"""Read raw count matrices and keep them in AnnData Zarr stores that Dask streams by rows.

Readers (one per input format) only turn a path into cell and gene annotations plus an
iterator of row chunks; the writer validates and appends those chunks to a CSR matrix in
Zarr without knowing where they came from. Downstream code sees a dask array of canonical
float32 ``scipy.sparse.csr_matrix`` blocks (sorted indices, no duplicates, no stored zeros),
one block per chunk of cells, whose tasks read the store themselves. Zarr stores, read or
written, may be local paths or fsspec URLs (``storage.py``); the other input formats are read
from local disk.
"""

from __future__ import annotations

import logging
import shutil
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from uuid import uuid4

import anndata as ad
import dask
import dask.array as da
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
import zarr
from anndata.io import read_elem, write_elem

from recall_dask.errors import InputError
from recall_dask.storage import Location, StorageOptions, open_group

BUNDLED_PBMC3K: Path = Path(__file__).resolve().parent / "data" / "pbmc3k"
logger = logging.getLogger(__name__)

#: Cells per row chunk: a multiple of the artificial genes' RNG block (1,024 cells).
DEFAULT_CHUNK_SIZE = 2048
#: Largest count float32 holds exactly (2^24); counts are stored and computed as float32.
MAX_COUNT = 1 << 24

# Zarr format of the stores we write; pinned so the layout does not change with anndata's default.
_ZARR_FORMAT = 2
# Stored chunk length (entries) of X/data and X/indices; X/indptr is chunked by cells instead.
_NNZ_CHUNK = 1 << 20
_CSR_META = sp.csr_matrix((0, 0), dtype=np.float32)
# What reading a damaged or foreign file raises, across gzip, scipy, pandas, h5py and zarr.
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zlib.error)

# Cell Ranger .h5 output: stored chunk length (entries) of the appended datasets, the chunk
# cache that keeps the partly filled last chunks in memory between appends, and the filters
# (standard HDF5 gzip and shuffle, readable from R and Python alike).
_H5_CHUNK = 1 << 18
_H5_CACHE_BYTES = 16 << 20
_H5_FILTERS: dict[str, Any] = {"compression": "gzip", "compression_opts": 4, "shuffle": True}

Block = np.ndarray | sp.spmatrix | sp.sparray


# -- validation (shared by ingest and counts_from_anndata) -------------------------------


def _check_chunk(chunk: Block, where: str) -> int:
    """Raise InputError unless ``chunk`` holds raw counts; return its number of nonzero counts."""
    values = chunk.data if sp.issparse(chunk) else np.asarray(chunk)
    if not np.isfinite(values).all():
        problem = "NaN or infinite values"
    elif (values < 0).any():
        problem = "negative values"
    elif (values != np.round(values)).any():
        problem = "non-integer values"
    elif (values > MAX_COUNT).any():
        problem = f"counts above {MAX_COUNT:,} (float32 cannot hold them exactly)"
    else:
        return int(np.count_nonzero(values))
    raise InputError(f"{where}: {problem} in the count matrix; expected raw integer UMI counts")


def _check_totals(n_obs: int, n_vars: int, nnz: int, where: str) -> None:
    """Reject matrices that cannot be clustered: no cells, no genes, or no counts at all."""
    if n_obs == 0 or n_vars == 0:
        raise InputError(f"{where}: empty matrix ({n_obs} cells x {n_vars} genes)")
    if nnz == 0:
        raise InputError(f"{where}: no genes detected (all {n_obs} x {n_vars} counts are zero)")


def canonical_counts(chunk: Block) -> sp.csr_matrix:
    """Any dense or sparse block of counts in the one form every stage computes on: float32
    CSR with sorted column indices, no duplicate entries (they add up, as in Matrix Market)
    and no stored zeros.

    The same counts then give the same answer whatever form they came in. A block already in
    that form comes back sharing its arrays (no stage modifies its input); anything else is
    rebuilt in new arrays, so the caller's matrix is never touched.
    """
    if not sp.issparse(chunk):
        return sp.csr_matrix(np.asarray(chunk), dtype=np.float32)
    csr = chunk.tocsr()
    # Rebuilt from its arrays, the matrix checks its format afresh instead of trusting flags.
    csr = sp.csr_matrix((csr.data, csr.indices, csr.indptr), shape=csr.shape)
    if csr.dtype == np.float32 and csr.has_canonical_format and csr.data.all():
        return csr
    owned = sp.csr_matrix(
        (csr.data.astype(np.float64), csr.indices.copy(), csr.indptr.copy()), shape=csr.shape
    )
    owned.sum_duplicates()  # also sorts the indices
    owned.eliminate_zeros()
    return owned.astype(np.float32)


def _check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")


# -- readers: path -> annotations + row chunks -------------------------------------------


@dataclass(frozen=True)
class _Counts:
    """A readable input: annotations in memory, and row chunks of counts on demand.

    ``rows(chunk_size)`` opens the input itself, so no file handle outlives the iteration.
    """

    obs: pd.DataFrame
    var: pd.DataFrame
    rows: Callable[[int], Iterator[Block]]


@contextmanager
def _reading(path: Path | Location) -> Iterator[None]:
    """Report a damaged or unreadable input as one InputError line naming the path."""
    try:
        yield
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


@contextmanager
def _writing(path: Location) -> Iterator[None]:
    """Report an output that cannot be written (missing bucket, no permission, ...) as one
    InputError line naming it."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc}") from exc


def _guarded(chunks: Iterator[Block], path: Location) -> Iterator[Block]:
    """Read errors while iterating become InputErrors; errors of the consumer stay as they are."""
    with _reading(path):
        yield from chunks


def _row_slices(matrix: Any, chunk_size: int) -> Iterator[Block]:
    """Yield consecutive row slices of anything sliceable: arrays, CSR matrices, h5/zarr arrays."""
    for start in range(0, matrix.shape[0], chunk_size):
        yield matrix[start : start + chunk_size]


def _csr_rows(group: Any, start: int, stop: int, n_cols: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of a CSR matrix stored as data/indices/indptr arrays (h5py or
    zarr), reading only their entries."""
    indptr = group["indptr"][start : stop + 1].astype(np.int64)
    lo, hi = int(indptr[0]), int(indptr[-1])
    parts = (group["data"][lo:hi], group["indices"][lo:hi], indptr - lo)
    return sp.csr_matrix(parts, shape=(stop - start, n_cols))


def _csr_group_rows(group: Any, shape: Sequence[int], chunk_size: int) -> Iterator[sp.csr_matrix]:
    """Stream a stored CSR matrix one chunk of rows at a time."""
    n_rows, n_cols = (int(n) for n in shape)
    for start in range(0, n_rows, chunk_size):
        yield _csr_rows(group, start, min(start + chunk_size, n_rows), n_cols)


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


def _read_mtx_dir(source: Location, layer: str | None) -> _Counts:
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

    return _Counts(_cell_table(barcodes[0]), var, rows)


def _10x_group(file: h5py.File, path: Location) -> str:
    """Name of the matrix group: ``matrix`` (v3), or the single genome group (v2)."""
    if "matrix" in file:
        return "matrix"
    genomes = [name for name, item in file.items() if isinstance(item, h5py.Group)]
    if len(genomes) != 1 or "genes" not in file[genomes[0]]:
        raise InputError(f"{path}: not a Cell Ranger .h5 (no 'matrix' group)")
    return genomes[0]


def _read_10x_h5(source: Location, layer: str | None) -> _Counts:
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

    return _Counts(_cell_table(barcodes), var, rows)


def _csc_element_rows(elem: Any, chunk_size: int) -> Iterator[Block]:
    """CSC cannot be read by rows, so it is loaded whole (in memory) and converted once."""
    return _row_slices(sp.csr_matrix(read_elem(elem)), chunk_size)


# Row-chunk readers of anndata-encoded matrix elements, by their encoding-type.
_ELEMENT_ROWS: dict[str, Callable[[Any, int], Iterator[Block]]] = {
    "csr_matrix": lambda elem, size: _csr_group_rows(elem, elem.attrs["shape"], size),
    "csc_matrix": _csc_element_rows,
    "array": _row_slices,
}


def _anndata_reader(
    open_root: Callable[[Location], Any],
) -> Callable[[Location, str | None], _Counts]:
    """Reader for an AnnData container (h5ad or zarr) given how to open its root group."""

    def read(path: Location, layer: str | None) -> _Counts:
        key = "X" if layer is None else f"layers/{layer}"
        with open_root(path) as root:
            if key not in root:
                raise InputError(f"{path}: no {key} matrix in this AnnData file")
            encoding = root[key].attrs.get("encoding-type")
            if encoding not in _ELEMENT_ROWS:
                raise InputError(f"{path}: {key} has unsupported encoding {encoding!r}")
            obs, var = read_elem(root["obs"]), read_elem(root["var"])

        def rows(chunk_size: int) -> Iterator[Block]:
            with open_root(path) as root:
                yield from _ELEMENT_ROWS[encoding](root[key], chunk_size)

        return _Counts(obs, var, rows)

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


def _reader_for(path: Location) -> Callable[[Location, str | None], _Counts]:
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


# -- writer: row chunks -> AnnData Zarr store --------------------------------------------


def _create_csr(root: zarr.Group, n_vars: int, chunk_size: int) -> zarr.Group:
    """An empty anndata-encoded CSR group; indptr is chunked by ``chunk_size`` cells."""
    group = root.create_group("X")
    group.attrs.update(
        {"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": [0, n_vars]}
    )
    group.create_array("indptr", shape=(1,), chunks=(chunk_size,), dtype="int64", fill_value=0)
    group["indptr"][:] = 0
    group.create_array("indices", shape=(0,), chunks=(_NNZ_CHUNK,), dtype="int32")
    group.create_array("data", shape=(0,), chunks=(_NNZ_CHUNK,), dtype="float32")
    return group


def _append_rows(group: zarr.Group, chunk: sp.csr_matrix) -> None:
    offset = group["data"].shape[0]
    group["indptr"].append(chunk.indptr[1:].astype(np.int64) + offset)
    group["indices"].append(chunk.indices.astype(np.int32))
    group["data"].append(chunk.data)


def _validated_rows(
    counts: _Counts, chunk_size: int, where: Location
) -> Iterator[tuple[str, sp.spmatrix]]:
    """Each row chunk with its cells' label, checked as raw counts of the listed genes.

    Once the chunks are exhausted, checks that they cover every listed cell and that the
    matrix is not empty, so a writer that consumes them all has written valid counts.
    """
    n_obs, n_vars = len(counts.obs), len(counts.var)
    n_rows = nnz = 0
    for chunk in _guarded(counts.rows(chunk_size), where):
        cells = f"{where} (cells {n_rows}-{n_rows + chunk.shape[0] - 1})"
        nnz += _check_chunk(chunk, cells)
        if chunk.shape[1] != n_vars:
            raise InputError(f"{cells}: {chunk.shape[1]} genes in the matrix, {n_vars} listed")
        yield cells, chunk
        n_rows += chunk.shape[0]
        if n_rows * 10 // max(n_obs, 1) > (n_rows - chunk.shape[0]) * 10 // max(n_obs, 1):
            logger.info("read %d of %d cells of %s", n_rows, n_obs, where)
    if n_rows != n_obs:
        raise InputError(f"{where}: {n_rows} cells in the matrix, {n_obs} barcodes listed")
    _check_totals(n_obs, n_vars, nnz, str(where))


def _stream_x(counts: _Counts, root: zarr.Group, chunk_size: int, where: Location) -> None:
    """Append each validated row chunk to X; then set the shape."""
    group = _create_csr(root, len(counts.var), chunk_size)
    for _, chunk in _validated_rows(counts, chunk_size, where):
        _append_rows(group, canonical_counts(chunk))
    group.attrs["shape"] = [len(counts.obs), len(counts.var)]


def _write_store(counts: _Counts, target: Location, chunk_size: int, where: Location) -> None:
    root = target.open_group("w", zarr_format=_ZARR_FORMAT)
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    write_elem(root, "obs", counts.obs)
    write_elem(root, "var", counts.var)
    write_elem(root, "obsm", {})
    write_elem(root, "uns", {})
    _stream_x(counts, root, chunk_size, where)
    zarr.consolidate_metadata(root.store)


def _check_distinct(source: Location, store: Location) -> None:
    """Refuse outputs that would overwrite, contain or sit inside the input."""
    if source.fs.protocol != store.fs.protocol:
        return
    a, b = PurePosixPath(source.path), PurePosixPath(store.path)
    if a == b or a in b.parents or b in a.parents:
        raise InputError(f"output store {store} is or overlaps the input {source}")


def _replace(partial: Path, store: Path) -> None:
    if store.is_dir() and not store.is_symlink():
        shutil.rmtree(store)
    elif store.exists() or store.is_symlink():
        store.unlink()
    partial.rename(store)


def ingest(
    source: str | Path,
    store: str | Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    layer: str | None = None,
    storage_options: StorageOptions = None,
) -> None:
    """Convert raw counts in any supported format into an AnnData Zarr store at ``store``.

    X is written as canonical float32 CSR (:func:`canonical_counts`) one chunk of
    ``chunk_size`` cells at a time, validating each chunk (see :func:`write_stream`);
    ``source`` is only ever opened read-only. ``store``, and a ``.zarr`` ``source``, may be any
    URL fsspec reads, opened with ``storage_options``.
    """
    source_at, target = (Location.of(p, storage_options) for p in (source, store))
    _check_chunk_size(chunk_size)
    _check_distinct(source_at, target)
    with _reading(source_at):
        counts = _reader_for(source_at)(source_at, layer)
    _write_atomically(_write_store, counts, target, chunk_size, source_at)


def write_stream(
    store: str | Path,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    rows: Callable[[int], Iterator[Block]],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    storage_options: StorageOptions = None,
) -> None:
    """Write the counts that ``rows(chunk_size)`` yields, chunk by chunk, as an AnnData store.

    Each chunk is validated as raw counts. On a local disk the store is written into a hidden
    sibling directory that replaces ``store`` only once complete, so a failure leaves neither
    partial output nor a damaged previous store; see :func:`_write_atomically` for URLs.
    """
    target = Location.of(store, storage_options)
    _check_chunk_size(chunk_size)
    _write_atomically(_write_store, _Counts(obs, var, rows), target, chunk_size, target)


def _write_atomically(
    write: Callable[[_Counts, Location, int, Location], None],
    counts: _Counts,
    out: Location,
    chunk_size: int,
    where: Location,
) -> None:
    """``write`` into a hidden sibling of ``out`` that replaces ``out`` only once complete.

    Object stores (any URL that is not on a local disk) cannot rename a directory
    atomically: there the previous ``out`` is removed, ``write`` writes at ``out`` itself,
    and what it wrote is removed if it fails. A failure leaves no partial output either way,
    but on an object store it does not keep the previous one.
    """
    if not out.is_local:
        with _writing(out):
            out.remove()
        try:
            with _writing(out):
                write(counts, out, chunk_size, where)
        except BaseException:
            with suppress(OSError):
                out.remove()
            raise
        return
    partial = out.sibling(f".{out.name}.partial-{uuid4().hex}")
    try:
        with _writing(out):
            write(counts, partial, chunk_size, where)
            _replace(Path(partial.path), Path(out.path))
    finally:
        partial.remove()


# -- writer: row chunks -> Cell Ranger v3 HDF5 file -------------------------------------


def _h5_strings(values: Any) -> np.ndarray:
    """Strings as the fixed-length UTF-8 bytes Cell Ranger stores."""
    return np.char.encode(np.asarray(values, dtype=str), "utf-8")


def _write_10x_file(counts: _Counts, target: Location, chunk_size: int, where: Location) -> None:
    """Validate each row chunk and append it to the 10x ``matrix`` group of a new file."""
    n_obs, n_vars = len(counts.obs), len(counts.var)
    with h5py.File(target.path, "w", rdcc_nbytes=_H5_CACHE_BYTES) as file:
        file.attrs.update({"filetype": "matrix", "version": 2})
        group = file.create_group("matrix")
        features = group.create_group("features")
        names = counts.var.index
        for key, values in (
            ("id", counts.var.get("gene_ids", names)),
            ("name", names),
            ("feature_type", counts.var.get("feature_types", ["Gene Expression"] * n_vars)),
            ("genome", counts.var.get("genome", [""] * n_vars)),
            ("_all_tag_keys", ["genome"]),
        ):
            features.create_dataset(key, data=_h5_strings(values), **_H5_FILTERS)
        group.create_dataset("barcodes", data=_h5_strings(counts.obs.index), **_H5_FILTERS)
        appendable = {
            name: group.create_dataset(
                name, shape=(0,), maxshape=(None,), chunks=(_H5_CHUNK,), dtype=dtype, **_H5_FILTERS
            )
            for name, dtype in (("data", np.int32), ("indices", np.int64), ("indptr", np.int64))
        }
        appendable["indptr"].resize((1,))
        appendable["indptr"][0] = 0
        for _, chunk in _validated_rows(counts, chunk_size, where):
            rows = canonical_counts(chunk)
            offset = appendable["data"].shape[0]
            for name, values in (
                ("data", rows.data),
                ("indices", rows.indices),
                ("indptr", rows.indptr[1:].astype(np.int64) + offset),
            ):
                dataset = appendable[name]
                start = dataset.shape[0]
                dataset.resize((start + values.size,))
                dataset[start:] = values.astype(dataset.dtype)
        group.create_dataset("shape", data=np.array([n_vars, n_obs], dtype=np.int32))


def write_10x_h5(
    path: str | Path,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    rows: Callable[[int], Iterator[Block]],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Write the counts that ``rows(chunk_size)`` yields as a Cell Ranger v3 ``.h5`` file.

    The layout is that of Cell Ranger's feature-barcode matrix: group ``matrix`` holding the
    genes x cells matrix as CSC (``data`` int32, ``indices`` int64, ``indptr`` int64,
    ``shape`` = [genes, cells]), ``barcodes`` from ``obs.index``, and ``features/{id, name,
    feature_type, genome}`` from ``var`` (columns ``gene_ids``, ``feature_types`` and
    ``genome`` if present, else the var names, "Gene Expression" and ""). CSC by cell is CSR
    by cell, so each row chunk is validated as raw counts (like :func:`write_stream`) and
    appended to gzip-compressed, resizable datasets; the whole matrix is never in memory.
    The file is written under a hidden sibling name that replaces ``path`` only once complete,
    so a failure leaves neither partial output nor a damaged previous file. Local paths only.
    """
    target = Location.of(path)
    if not target.is_local:
        raise InputError(f"{path}: Cell Ranger .h5 files are written to a local disk only")
    _check_chunk_size(chunk_size)
    _write_atomically(_write_10x_file, _Counts(obs, var, rows), target, chunk_size, target)


# -- lazy access and results -------------------------------------------------------------


def _open_group(store: Location, mode: str) -> zarr.Group:
    if not store.isdir():
        raise InputError(f"{store}: no such Zarr store")
    with _reading(store):
        return store.open_group(mode, use_consolidated=None if mode == "r" else False)


def open_counts(
    store: str | Path, *, chunk_size: int | None = None, storage_options: StorageOptions = None
) -> ad.AnnData:
    """Open a store written by :func:`ingest` (a path or URL): obs and var in memory, X lazy.

    X is a dask array of float32 ``csr_matrix`` blocks of ``chunk_size`` cells (default: the
    chunking stored by ingest). Its tasks hold the store's URL, key and storage options, not
    data or open handles, so each worker reads its own rows.
    """
    location = Location.of(store, storage_options)
    root = _open_group(location, "r")
    x = root.get("X")
    if x is None or x.attrs.get("encoding-type") != "csr_matrix":
        raise InputError(f"{store}: X is not a CSR count matrix; create the store with ingest()")
    rows = x["indptr"].chunks[0] if chunk_size is None else chunk_size
    _check_chunk_size(rows)
    obs, var = read_elem(root["obs"]), read_elem(root["var"])
    n_obs, n_vars = (int(n) for n in x.attrs["shape"])
    starts = [*range(0, n_obs, rows), n_obs]
    lazy = da.map_blocks(
        _read_csr_block,
        chunks=(tuple(np.diff(starts).tolist()), (n_vars,)),
        dtype=np.float32,
        meta=_CSR_META,
        url=location.url,
        key="X",
        storage_options=location.storage_options,
    )
    return ad.AnnData(X=lazy, obs=obs, var=var)


def _read_csr_block(
    url: str, key: str, storage_options: StorageOptions, block_info: dict
) -> sp.csr_matrix:
    """The rows of this block, read by the task itself from the CSR group ``key`` at ``url``,
    in canonical form: a store clustered in place may hold any valid CSR."""
    (start, stop), (_, n_cols) = block_info[None]["array-location"]
    group = open_group(url, "r", storage_options)[key]
    return canonical_counts(_csr_rows(group, start, stop, n_cols))


def _row_blocked(matrix: Any, chunk_size: int) -> da.Array:
    """Any in-memory or dask matrix as a dask array chunked by rows only (no copy to disk)."""
    if isinstance(matrix, da.Array):
        return matrix.rechunk((chunk_size, -1))
    matrix = sp.csr_matrix(matrix) if sp.issparse(matrix) else np.asarray(matrix)
    return da.from_array(matrix, chunks=(chunk_size, -1), asarray=False)


def counts_from_anndata(
    adata: ad.AnnData, *, layer: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> da.Array:
    """Validated raw counts of an in-memory AnnData as row chunks of canonical float32 CSR
    blocks (:func:`canonical_counts`).

    Takes ``adata.X`` or ``adata.layers[layer]`` (dense, CSR, CSC or dask; any integer or
    float dtype holding integers). The checks of :func:`ingest` run eagerly, one pass over the
    blocks, so errors surface here. The matrix itself is never modified.
    """
    _check_chunk_size(chunk_size)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    matrix = adata.X if layer is None else adata.layers.get(layer)
    if matrix is None:
        raise InputError(f"{where} is missing")
    blocks = _row_blocked(matrix, chunk_size)
    checks = [dask.delayed(_check_chunk)(b, where) for b in blocks.to_delayed().ravel()]
    _check_totals(*blocks.shape, sum(dask.compute(*checks)), where)
    return blocks.map_blocks(canonical_counts, dtype=np.float32, meta=_CSR_META)


def _writable(value: Any) -> Any:
    """Make ``value`` writable by anndata: dicts recurse; a list holding dicts becomes a dict
    keyed "0", "1", ... (read back with ``[d[str(i)] for i in range(len(d))]``); other lists
    become numpy arrays."""
    if isinstance(value, Mapping):
        return {str(key): _writable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        if any(isinstance(item, Mapping) for item in value):
            return {str(i): _writable(item) for i, item in enumerate(value)}
        return np.asarray(value)
    return value


def write_results(
    store: str | Path,
    *,
    obs: pd.DataFrame,
    obsm: Mapping[str, np.ndarray],
    uns: Mapping[str, Any],
    storage_options: StorageOptions = None,
) -> None:
    """Store clustering results next to the counts: replace obs (same cells, same order),
    add or replace the given obsm and uns entries; X is left untouched.

    uns values may nest dicts, scalars, strings, arrays and lists; see :func:`_writable` for
    how lists of dicts are stored.
    """
    root = _open_group(Location.of(store, storage_options), "r+")
    cells = read_elem(root["obs"]).index
    if not obs.index.equals(cells):
        raise InputError(f"{store}: obs index differs from the cells in the store")
    for key, value in obsm.items():
        if np.shape(value)[0] != len(cells):
            raise InputError(f"obsm[{key!r}] has {np.shape(value)[0]} rows, expected {len(cells)}")
    write_elem(root, "obs", obs)
    for name, entries in (("obsm", {k: np.asarray(v) for k, v in obsm.items()}), ("uns", uns)):
        if name not in root:
            write_elem(root, name, {})
        for key, value in entries.items():
            write_elem(root[name], key, _writable(value))
    zarr.consolidate_metadata(root.store)


def read_results(store: str | Path, *, storage_options: StorageOptions = None) -> ad.AnnData:
    """obs, var, obsm and uns of a store (a path or URL), without X: the results of a run."""
    location = Location.of(store, storage_options)
    root = _open_group(location, "r")
    with _reading(location):
        parts = {key: read_elem(root[key]) for key in ("obs", "var", "obsm", "uns") if key in root}
    return ad.AnnData(**parts)


def write_labels_csv(path: str | Path, barcodes: Sequence[str], labels: Sequence[Any]) -> None:
    """Write one ``barcode,cluster`` row per cell, in input order, under that header."""
    if len(barcodes) != len(labels):
        raise InputError(f"{len(barcodes)} barcodes but {len(labels)} labels")
    frame = pd.DataFrame({"barcode": np.asarray(barcodes), "cluster": np.asarray(labels)})
    frame.to_csv(path, index=False)
