"""One writer per store: a lock file beside an output store, or inside a work store.

A run that writes a store first creates its lock file, holding the pid and host of the run
and when it started (:func:`holding`). A second run that finds the lock gets one
:class:`~recall_dask.errors.InputError` line naming the store and its holder, so it never
writes over the first. A lock left by a run that died (same host, no such process) is stale:
it is taken over with a warning. A lock from another host cannot be checked, so it holds until
it is removed by hand.

On a local disk the lock is created exclusively (``O_CREAT | O_EXCL``), which is atomic, also
on NFS v3 and later. Object stores (``s3://`` ...) have no exclusive create that fsspec offers
everywhere, so there the lock is advisory: checked, then written. Within one process the lock
is re-entrant for the thread that holds it, so a run can lock its output and then call writers
that lock the same store.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from uuid import uuid4

from recall_dask.errors import InputError
from recall_dask.io.storage import Location, StorageOptions

logger = logging.getLogger(__name__)

#: Name of the lock file inside a directory that a run owns (a work store).
LOCK_NAME = ".recall.lock"

# Locks this process holds: path -> (thread that holds it, depth of nesting).
_HELD: dict[str, tuple[int, int]] = {}
_HELD_LOCK = threading.Lock()


def lock_beside(store: Location) -> Location:
    """The lock file of an output store: a hidden sibling, since the store itself may be
    written under another name and renamed into place."""
    return store.sibling(f".{store.name}.lock")


def output_lock(
    store: str | os.PathLike, storage_options: StorageOptions = None
) -> AbstractContextManager[None]:
    """Hold the lock of the output store ``store`` (a path or URL) while writing it."""
    location = Location.of(store, storage_options)
    return holding(lock_beside(location), str(location))


@contextmanager
def holding(lock: Location, what: str) -> Iterator[None]:
    """Hold the lock file ``lock`` while the body writes ``what`` (named so in messages);
    remove it afterwards.

    Raises InputError if another live run holds it. Re-entrant within the holding thread.
    """
    thread = threading.get_ident()
    with _HELD_LOCK:
        owner, depth = _HELD.get(lock.url, (thread, 0))
        nested = depth > 0 and owner == thread
        if nested:
            _HELD[lock.url] = (thread, depth + 1)
    if not nested:
        _acquire(lock, what)
        with _HELD_LOCK:
            _HELD[lock.url] = (thread, 1)
    try:
        yield
    finally:
        with _HELD_LOCK:
            depth = _HELD.pop(lock.url)[1] - 1
            if depth:
                _HELD[lock.url] = (thread, depth)
        if not depth:
            _release(lock)


def _record() -> bytes:
    return json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    ).encode()


def _acquire(lock: Location, what: str) -> None:
    """Create the lock file, taking over a stale one once; else one line naming the holder."""
    for _ in range(2):
        if _create(lock, what):
            return
        holder = _read(lock)
        if holder is None or not _is_stale(holder):
            raise InputError(f"{what} is in use by another run ({_describe(holder, lock)})")
        if _take_over(lock, holder):
            logger.warning(
                "took over the stale lock of %s (%s, no longer running)", what, _describe(holder)
            )
    raise InputError(f"{what} is in use by another run (lock file {lock})")


def _create(lock: Location, what: str) -> bool:
    """Write our record into a new lock file; False if it exists already."""
    try:
        if lock.is_local:
            descriptor = os.open(lock.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(_record())
            except OSError:  # a full disk, say: leave no empty lock behind
                os.remove(lock.path)
                raise
            return True
        if lock.exists():
            return False
        lock.fs.pipe_file(lock.path, _record())
        return True
    except FileExistsError:
        return False
    except OSError as error:
        raise InputError(f"cannot write {what}: its lock file {lock}: {error}") from error


def _read(lock: Location) -> dict | None:
    """The holder's record; None if it cannot be read (being written, or not ours)."""
    try:
        record = json.loads(lock.fs.cat_file(lock.path))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _is_stale(holder: dict) -> bool:
    """Left by a process of this host that no longer runs."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, but another user's
        return False
    return False


def _take_over(lock: Location, holder: dict) -> bool:
    """Remove a stale lock, unless another run took it over first: the lock is moved aside
    (one mover wins) and removed only if it still holds the stale record."""
    if not lock.is_local:
        lock.remove()
        return True
    aside = lock.sibling(f"{lock.name}.stale-{uuid4().hex}")
    try:
        os.rename(lock.path, aside.path)
    except FileNotFoundError:
        return False
    if _read(aside) != holder:  # a new holder's lock: put it back
        with suppress(OSError):
            os.rename(aside.path, lock.path)
        return False
    os.remove(aside.path)
    return True


def _describe(holder: dict | None, lock: Location | None = None) -> str:
    if holder is None:
        return f"lock file {lock}"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    where = f"pid {holder.get('pid')} on {holder.get('host')} since {started}"
    return where if lock is None else f"{where}; lock file {lock}"


def _release(lock: Location) -> None:
    try:
        lock.remove()
    except OSError as error:
        logger.warning("could not remove the lock file %s: %s", lock, error)
