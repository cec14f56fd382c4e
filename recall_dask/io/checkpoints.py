"""Checkpoints in the work store: each finished stage of a run, kept so that ``--resume``
continues where a run stopped.

With ``--work-dir DIR`` a run works in ``DIR/recall-work-<output>-<hash>``, named after its
output so that rerunning the same command finds it. Its ``manifest.json`` holds the run's
fingerprint (:mod:`recall_dask.io.fingerprint`) and one entry per finished stage: the ingested
counts, the variable genes and null fit, each augmented (or train and test) matrix, each
embedding and neighbor graph, and each resolution of the calibration loop, per draw. A
stage's data is written first (an ``.npz`` of exact arrays, or a tiled matrix), then its
entry, and both atomically: a stage without an entry is recomputed, never trusted.

:class:`NoCheckpoints` computes everything (a run without ``--work-dir``, or from Python);
:class:`Checkpoints` loads what a manifest lists and records the rest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any
from uuid import uuid4

import numpy as np

from recall_dask._testhook import kill_point
from recall_dask.errors import InputError
from recall_dask.io.fingerprint import differences
from recall_dask.io.storage import Location, StorageOptions
from recall_dask.io.workstore import Tiles

logger = logging.getLogger(__name__)

_MANIFEST = "manifest.json"
#: Arrays of a stage, by name: what an ``.npz`` checkpoint holds.
Arrays = dict[str, np.ndarray]


class NoCheckpoints:
    """Stages computed every time and kept nowhere: a run without checkpoints."""

    def counts(self, store: Location, ingest: Callable[[], None]) -> None:
        """Ingest the counts into ``store``."""
        ingest()

    def arrays(self, name: str, compute: Callable[[], Arrays]) -> Arrays:
        """The arrays of stage ``name``."""
        return compute()

    def tiles(self, name: str, write: Callable[[], Tiles]) -> Tiles:
        """The matrix stage ``name`` writes to the work store."""
        return write()

    def load(self, name: str) -> Arrays | None:
        """The arrays of stage ``name`` if it finished before, else ``None``."""
        return None

    def save(self, name: str, arrays: Arrays) -> None:
        """Keep the arrays of the finished stage ``name``."""

    def location(self, name: str) -> Location | None:
        """Where the arrays of stage ``name`` are kept (``None``: nowhere): a task on a worker
        writes them there with :func:`write_arrays`, then :meth:`record` lists the stage."""
        return None

    def has(self, name: str) -> bool:
        """Whether stage ``name`` finished before (its arrays wait at :meth:`location`)."""
        return False

    def record(self, name: str) -> None:
        """List stage ``name``, whose arrays are now complete at :meth:`location`."""


NO_CHECKPOINTS = NoCheckpoints()


class Checkpoints(NoCheckpoints):
    """The finished stages of a run in its work store ``directory``: reused when listed in
    the manifest, recorded when computed. Safe to use from several threads (draws)."""

    def __init__(self, directory: Location, manifest: dict[str, Any]) -> None:
        self.directory = directory
        self._manifest = manifest
        self._lock = threading.Lock()

    @property
    def work(self) -> Path | str:
        """The work store, as :func:`~recall_dask.io.workstore.work_store` gives one: a
        ``Path`` when local, else its URL."""
        return Path(self.directory.path) if self.directory.is_local else self.directory.url

    @property
    def finished(self) -> list[str]:
        """Names of the finished stages, in the order they finished."""
        with self._lock:
            return list(self._manifest["entries"])

    def counts(self, store: Location, ingest: Callable[[], None]) -> None:
        """Reuse the ingested counts in ``store`` if the manifest lists them, else ingest."""
        entry = self._entry("counts")
        if entry is not None and entry["store"] == store.url and store.isdir():
            logger.info("reused from the work store: counts (ingested into %s)", store)
            return
        ingest()
        self._record("counts", store=store.url)

    def arrays(self, name: str, compute: Callable[[], Arrays]) -> Arrays:
        """The stage's arrays from the store, or computed and saved."""
        loaded = self.load(name)
        if loaded is not None:
            return loaded
        arrays = compute()
        self.save(name, arrays)
        return arrays

    def tiles(self, name: str, write: Callable[[], Tiles]) -> Tiles:
        """The stage's tiled matrix from the store, or written and recorded."""
        entry = self._entry(name)
        if entry is not None:
            logger.info("reused from the work store: %s", name)
            return Tiles(
                self.directory.child(name).url,
                tuple(entry["row_chunks"]),
                tuple(entry["feature_bounds"]),
                self.directory.storage_options,
            )
        tiles = write()
        self._record(name, row_chunks=tiles.row_chunks, feature_bounds=tiles.feature_bounds)
        return tiles

    def load(self, name: str) -> Arrays | None:
        """The arrays of stage ``name`` if the manifest lists it, else ``None``."""
        if not self.has(name):
            return None
        return read_arrays(self.location(name))

    def save(self, name: str, arrays: Arrays) -> None:
        """Write the stage's arrays, then list it."""
        write_arrays(self.location(name), arrays)
        self._record(name)

    def location(self, name: str) -> Location:
        """The stage's ``.npz`` in the work store."""
        return self.directory.child(f"{name}.npz")

    def has(self, name: str) -> bool:
        """Whether the manifest lists stage ``name`` (logged as reused when it does)."""
        if self._entry(name) is None:
            return False
        logger.info("reused from the work store: %s", name)
        return True

    def record(self, name: str) -> None:
        """List stage ``name`` in the manifest, its data being complete."""
        self._record(name)

    def _entry(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._manifest["entries"].get(name)

    def _record(self, name: str, **entry: Any) -> None:
        """Add the entry of a stage whose data is complete, and rewrite the manifest."""
        with self._lock:
            self._manifest["entries"][name] = entry
            _write_manifest(self.directory, self._manifest)
        kill_point(name)


@contextmanager
def checkpoint_store(
    work_dir: str | os.PathLike,
    output: str | os.PathLike,
    fingerprint: dict[str, Any],
    *,
    resume: bool,
    keep: bool,
    storage_options: StorageOptions = None,
) -> Iterator[Checkpoints]:
    """The checkpoints of the run that writes ``output``, in its work store under
    ``work_dir``: those of an earlier run with ``resume``, else a new, empty store.

    An earlier run's store without ``resume``, or one whose ``fingerprint`` differs, is an
    :class:`InputError` naming what to do or what differs. The store is removed when the run
    succeeds, unless ``keep``; when it fails, it is kept for ``--resume`` if any stage
    finished.
    """
    root = Location.of(work_dir, storage_options)
    if root.is_local and not root.isdir():
        raise InputError(f"work directory {work_dir} does not exist")
    directory = root.child(work_store_name(Location.of(output, storage_options)))
    fingerprint = json.loads(json.dumps(fingerprint))  # as the manifest will read it back
    manifest = _read_manifest(directory)
    if manifest is None:
        if resume:
            logger.info("no earlier work store at %s: starting from the beginning", directory)
        manifest = {"fingerprint": fingerprint, "entries": {}}
        if directory.is_local:
            os.makedirs(directory.path, mode=0o700, exist_ok=True)
        _write_manifest(directory, manifest)
    elif not resume:
        raise InputError(
            f"an earlier run of {output} left its work store at {directory}: rerun with "
            "--resume to continue it, or remove it to start over"
        )
    else:
        _check_same_run(directory, manifest["fingerprint"], fingerprint)
        logger.info(
            "resuming from the work store %s (%d finished stages)",
            directory,
            len(manifest["entries"]),
        )
    checkpoints = Checkpoints(directory, manifest)
    try:
        yield checkpoints
    except BaseException:
        if checkpoints.finished:
            logger.warning(
                "work store kept at %s: rerun the same command with --resume to continue",
                directory,
            )
        else:
            _remove(directory)
        raise
    if keep:
        logger.info("work store kept at %s (--keep-work)", directory)
    else:
        _remove(directory)


def work_store_name(output: Location) -> str:
    """The work store of the run writing ``output``: the same for every rerun of it, apart
    for runs with different outputs sharing a work directory."""
    digest = hashlib.sha256(output.url.encode()).hexdigest()[:12]
    return f"recall-work-{output.name}-{digest}"


def _check_same_run(directory: Location, earlier: dict[str, Any], now: dict[str, Any]) -> None:
    found = differences(earlier, now)
    if found:
        raise InputError(
            f"--resume: the work store {directory} is of another run ({'; '.join(found)}); "
            "rerun with its options and input, or remove it to start over"
        )


def _read_manifest(directory: Location) -> dict[str, Any] | None:
    location = directory.child(_MANIFEST)
    if not location.exists():
        return None
    try:
        return json.loads(location.fs.cat_file(location.path))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {location}: {error}; remove {directory}") from error


def _write_manifest(directory: Location, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=1).encode()
    _write_atomically(directory.child(_MANIFEST), lambda handle: handle.write(text))


def read_arrays(location: Location) -> Arrays:
    """The named arrays of an ``.npz`` in the work store (a task can read them anywhere)."""
    with location.fs.open(location.path, "rb") as handle, np.load(handle) as stored:
        return {key: stored[key] for key in stored.files}


def write_arrays(location: Location, arrays: Arrays) -> None:
    """Write named arrays as an ``.npz`` in the work store, whole or not at all."""
    _write_atomically(location, lambda handle: np.savez(handle, **arrays))


def _write_atomically(location: Location, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file whole or not at all: locally into a hidden sibling renamed over it once
    complete and synced; on an object store in one upload, which appears only when whole."""
    if not location.is_local:
        buffer = io.BytesIO()
        write(buffer)
        location.fs.pipe_file(location.path, buffer.getvalue())
        return
    partial = location.sibling(f".{location.name}.{uuid4().hex}.partial")
    try:
        with open(partial.path, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial.path, location.path)
    finally:
        with suppress(FileNotFoundError):
            os.remove(partial.path)


def _remove(directory: Location) -> None:
    try:
        directory.remove()
    except OSError as error:
        logger.warning("could not remove the work store %s: %s", directory, error)
