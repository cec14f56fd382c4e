"""The tuning knobs, as dask config under ``recall``, as dask-jobqueue keeps its defaults.

The defaults are shipped in ``recall_dask.yaml`` beside this module and merged into dask's
defaults (``dask.config.update_defaults``) the first time a knob is read, so dask's own
sources win: ``dask.config.set``, ``DASK_RECALL__*`` environment variables and YAML files in
dask's config path. :func:`get` reads a knob at call time; stages read them on the client,
while they build their task graphs, and hand the values to their tasks.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

#: The shipped defaults.
DEFAULTS_PATH = Path(__file__).with_name("recall_dask.yaml")


@functools.cache
def shipped() -> dict[str, Any]:
    """The shipped defaults, ``{"recall": {knob: value}}``, read without importing dask (the
    command line's help shows them)."""
    import yaml

    return yaml.safe_load(DEFAULTS_PATH.read_text())


@functools.cache
def _registered() -> None:
    import dask.config

    dask.config.update_defaults(shipped())


def get(key: str) -> Any:
    """The value of the knob ``recall.<key>`` in dask config now.

    Falls back on the shipped value: leaving a ``dask.config.set({"recall.x": ...})`` block
    that was entered before the defaults were merged removes the whole ``recall`` section.
    """
    import dask.config

    _registered()
    return dask.config.get(f"recall.{key}", default=shipped()["recall"][key])
