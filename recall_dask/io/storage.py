"""Where stores live: a local path or any URL that fsspec reads (``file://``, ``s3://``, ...).

A :class:`Location` names a store or directory once: its filesystem, its path there, and
the storage options that open it again, so that tasks can carry a URL and options (never an
open handle) and each worker opens what it reads. Credentials and endpoints come from fsspec's
usual sources (environment, ``~/.aws``, fsspec configuration) unless ``storage_options`` are
given; they are ignored for local paths. Local paths (and ``file://`` URLs) are resolved to
absolute paths and opened with zarr's ``LocalStore``, other URLs with its ``FsspecStore``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import zarr
from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from zarr.storage import FsspecStore, LocalStore

#: fsspec storage options (``endpoint_url``, ``key``, ``anon``, ...); ``None`` for none.
StorageOptions = Mapping[str, Any] | None


@dataclass(frozen=True)
class Location:
    """A file, directory or store named by a local path or an fsspec URL."""

    url: str  # an absolute local path, or the URL as given without a trailing "/"
    fs: AbstractFileSystem = field(repr=False, compare=False)
    path: str  # the name within ``fs``
    storage_options: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, url: str | os.PathLike, storage_options: StorageOptions = None) -> Location:
        """The location of a local path or an fsspec URL, opened with ``storage_options``."""
        text = os.fspath(url)
        fs, path = url_to_fs(text, **dict(storage_options or {}))
        if isinstance(fs, LocalFileSystem):
            path = str(Path(path).expanduser().resolve())
            return cls(path, fs, path)
        return cls(text.rstrip("/"), fs, path, dict(storage_options or {}) or None)

    def __str__(self) -> str:
        return self.url

    @property
    def is_local(self) -> bool:
        """On a local disk: real directories and atomic renames."""
        return isinstance(self.fs, LocalFileSystem)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix.lower()

    def child(self, name: str) -> Location:
        """The entry ``name`` inside this location."""
        return Location(f"{self.url}/{name}", self.fs, f"{self.path}/{name}", self.storage_options)

    def sibling(self, name: str) -> Location:
        """The entry ``name`` beside this location, in the same parent."""
        url, path = self.url.rsplit("/", 1)[0], self.path.rsplit("/", 1)[0]
        return Location(f"{url}/{name}", self.fs, f"{path}/{name}", self.storage_options)

    def exists(self) -> bool:
        """Whether anything is there now (the filesystem's listing cache is bypassed)."""
        self.fs.invalidate_cache(self.path)  # another process or store may have written it
        return self.fs.exists(self.path)

    def isdir(self) -> bool:
        """Whether a directory (or key prefix) is there now."""
        self.fs.invalidate_cache(self.path)
        return self.fs.isdir(self.path)

    def isfile(self) -> bool:
        """Whether a file (or object) is there now."""
        self.fs.invalidate_cache(self.path)
        return self.fs.isfile(self.path)

    def remove(self) -> None:
        """Delete the file, or the directory (object prefix) with all it holds, if present."""
        with suppress(FileNotFoundError):
            self.fs.rm(self.path, recursive=True)
        self.fs.invalidate_cache(self.path)

    def zarr_store(self, *, read_only: bool = False) -> LocalStore | FsspecStore:
        """A zarr store rooted here."""
        if self.is_local:
            return LocalStore(self.path, read_only=read_only)
        return FsspecStore.from_url(
            self.url, storage_options=self.storage_options, read_only=read_only
        )

    def open_group(self, mode: str, **kwargs: Any) -> zarr.Group:
        """``zarr.open_group`` on this location (``kwargs`` as for zarr)."""
        return zarr.open_group(self.zarr_store(read_only=mode == "r"), mode=mode, **kwargs)


def open_group(
    url: str, mode: str, storage_options: StorageOptions = None, **kwargs: Any
) -> zarr.Group:
    """Open the Zarr group at ``url``: what a task does with the URL and options it holds."""
    return Location.of(url, storage_options).open_group(mode, **kwargs)
