"""What a long run shows while it works: a line per stage and per iteration, a bar per pass.

:func:`stage` logs a stage's start and end and records its seconds for
``uns['recall']['stage_seconds']``. Every pass over the cells is one Dask computation, and
:func:`compute` gives it a progress bar when reporting is on and someone is watching (a
terminal or a notebook, not a log file): distributed's bar on a distributed client (a widget
in a notebook with ipywidgets, else text), or ``dask.diagnostics``' text bar on dask's local
schedulers. The lines are the ``recall_dask`` logger's INFO records. :func:`reporting`
switches both on or off for the duration of a run; the command line's ``--quiet`` and
``recall(..., progress=False)`` switch them off.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import dask
import distributed
from dask.diagnostics import ProgressBar
from distributed.utils import is_kernel

_SHOWN: ContextVar[bool] = ContextVar("recall_dask_progress", default=False)
_LOGGER = logging.getLogger("recall_dask")
logger = logging.getLogger(__name__)
#: Local passes shorter than this show no bar, so quick steps do not flicker.
_MINIMUM_SECONDS = 1.0


@contextmanager
def reporting(enabled: bool) -> Iterator[None]:
    """Show (or hide) stage lines, iteration lines and progress bars inside this block.

    Lines go where the application's logging sends them; with no handler configured (a plain
    script or a notebook) they go to stderr.
    """
    level = _LOGGER.level
    handler = None
    if enabled and not _LOGGER.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _LOGGER.addHandler(handler)
    _LOGGER.setLevel(logging.INFO if enabled else logging.WARNING)
    token = _SHOWN.set(enabled)
    try:
        yield
    finally:
        _SHOWN.reset(token)
        _LOGGER.setLevel(level)
        if handler is not None:
            _LOGGER.removeHandler(handler)


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Log the start and the end of stage ``name`` and add its seconds to ``timings[name]``
    (a stage that runs once per draw adds up)."""
    logger.info("%s ...", name)
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    timings[name] = round(timings.get(name, 0.0) + seconds, 3)  # count splitting: per draw
    logger.info("%s done in %.2f s", name, seconds)


def compute(*collections: Any) -> tuple:
    """``dask.compute(*collections)``, with a progress bar while reporting is on."""
    if not (_SHOWN.get() and _interactive()):
        return dask.compute(*collections)
    client = distributed_client()
    if client is None:
        with ProgressBar(minimum=_MINIMUM_SECONDS):
            return dask.compute(*collections)
    futures = client.compute(list(collections))
    distributed.progress(futures, notebook=_widgets())
    return tuple(client.gather(futures))


def watch(future: distributed.Future) -> None:
    """Show a bar for a computation already submitted to the distributed cluster, while
    reporting is on and someone is watching; it returns once the computation is done."""
    if _SHOWN.get() and _interactive():
        distributed.progress(future, notebook=_widgets())


def _interactive() -> bool:
    """A terminal or a notebook: where a bar redrawn in place reads well (a log file: not)."""
    return sys.stdout.isatty() or is_kernel()


def _widgets() -> bool:
    """A notebook that can draw ipywidgets; other notebooks get the text bar."""
    return is_kernel() and importlib.util.find_spec("ipywidgets") is not None


def distributed_client() -> distributed.Client | None:
    """The client dask.compute would use, if it is a distributed one."""
    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None
    try:
        return distributed.get_client()
    except ValueError:
        return None
