"""What a run's results depend on, recorded in its work store so that ``--resume`` never mixes
two runs: the input's size, modification time and sampled bytes, the options that change the
result, and the package version.

Options that only change how the work is spread (chunk size, workers, progress) are left
out: a run gives the same labels whichever they are, so a resumed run may change them.
"""

from __future__ import annotations

import hashlib
import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from recall_dask.io.storage import Location, StorageOptions

#: Bytes hashed at each end of a file; a file up to twice this is hashed whole.
_SAMPLE = 1 << 20
#: Options that never change a finished stage: raising the iteration limit continues the loop.
_NOT_FINGERPRINTED = ("max_iterations",)
#: Files of an AnnData Zarr store that hold the counts: results written into a store in
#: place (obs, obsm, uns) do not change its fingerprint.
_ZARR_COUNTS = ("X", "var", "layers")


def run_fingerprint(
    source: str | os.PathLike,
    options: dict[str, Any],
    storage_options: StorageOptions = None,
) -> dict[str, Any]:
    """The fingerprint of a run on ``source`` with ``options`` (RecallParams' fields and the
    input's layer), as JSON-ready values."""
    try:
        package = version("recall-dask")
    except PackageNotFoundError:
        package = "unknown"
    kept = {k: v for k, v in options.items() if k not in _NOT_FINGERPRINTED}
    return {
        "recall-dask": package,
        "input": input_fingerprint(Location.of(source, storage_options)),
        "options": kept,
    }


def input_fingerprint(source: Location) -> dict[str, Any]:
    """Size and latest modification time of the input's files, and a hash of the first and
    last :data:`_SAMPLE` bytes of its first and last file (of all of a small file)."""
    files = _files(source)
    infos = [source.fs.info(path) for path in files]
    digest = hashlib.sha256()
    for path, info in {files[0]: infos[0], files[-1]: infos[-1]}.items() if files else ():
        digest.update(_sample(source, path, int(info.get("size") or 0)))
    return {
        "path": source.url,
        "files": len(files),
        "size": sum(int(info.get("size") or 0) for info in infos),
        "mtime": max((_modified(info) for info in infos), default=""),
        "sampled bytes": digest.hexdigest(),
    }


def _files(source: Location) -> list[str]:
    """The files whose contents are the input, in a stable order: the file itself, or those
    of a folder (of a Zarr store, only its counts and genes)."""
    if not source.isdir():
        return [source.path] if source.exists() else []
    found = sorted(source.fs.find(source.path))
    if any(os.path.basename(p) in (".zgroup", "zarr.json") for p in found):
        prefixes = tuple(f"{source.path}/{name}/" for name in _ZARR_COUNTS)
        found = [p for p in found if p.startswith(prefixes)]
    return found


def _sample(source: Location, path: str, size: int) -> bytes:
    if size <= 2 * _SAMPLE:
        return source.fs.cat_file(path)
    return source.fs.cat_file(path, 0, _SAMPLE) + source.fs.cat_file(path, size - _SAMPLE, size)


def _modified(info: dict[str, Any]) -> str:
    """A file's modification time as the filesystem reports it (object stores: LastModified)."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, as phrases for one line ("--seed was 0, now 1")."""
    found = []
    if earlier.get("recall-dask") != now["recall-dask"]:
        found.append(f"recall-dask was {earlier.get('recall-dask')}, now {now['recall-dask']}")
    before, after = earlier.get("input", {}), now["input"]
    changed = [key for key in after if key != "path" and before.get(key) != after[key]]
    if before.get("path") != after["path"]:
        found.append(f"the input was {before.get('path')}, now {after['path']}")
    elif changed:
        found.append(f"the input {after['path']} (its {', '.join(changed)} changed)")
    options = earlier.get("options", {})
    for name in sorted(set(options) | set(now["options"])):
        if options.get(name) != now["options"].get(name):
            flag = "--" + name.replace("_", "-")
            found.append(f"{flag} was {options.get(name)}, now {now['options'].get(name)}")
    return found
