"""The tuning knobs live in dask config under ``recall`` (shipped in recall_dask.yaml), and a
plain import or ``--help`` loads none of the heavy modules."""

from __future__ import annotations

import os
import subprocess
import sys

import dask

from recall_dask import config

HEAVY = ("dask.array", "numba", "anndata", "scipy", "zarr", "sklearn", "igraph", "distributed")
LOADED = f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"


def _python(code: str, **env: str) -> str:
    """The last line ``code`` prints in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return result.stdout.strip().splitlines()[-1]


def test_every_shipped_knob_is_in_dask_config():
    for key, value in config.shipped()["recall"].items():
        assert config.get(key) == value


def test_dask_config_set_overrides_a_knob():
    shipped = config.get("gram-partials")
    with dask.config.set({"recall.gram-partials": 3}):
        assert config.get("gram-partials") == 3
    assert config.get("gram-partials") == shipped


def test_knobs_outlive_a_dask_config_set_block_entered_before_their_first_use():
    code = (
        "import dask\n"
        "from recall_dask import config\n"
        "with dask.config.set({'recall.gram-partials': 3}):\n"
        "    assert config.get('gram-partials') == 3\n"
        "print(config.get('gram-partials'), config.get('chunk-size'))"
    )
    assert _python(code) == "8 2048"


def test_an_environment_variable_overrides_a_knob():
    code = "from recall_dask import config; print(config.get('gram-partials'))"
    assert _python(code, DASK_RECALL__GRAM_PARTIALS="3") == "3"


def test_import_loads_no_heavy_module():
    assert _python(f"import sys, recall_dask; {LOADED}") == "[]"


def test_help_loads_no_heavy_module():
    code = (
        "import contextlib, io, sys\n"
        "from recall_dask.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['run', '--help'])\n"
        f"{LOADED}"
    )
    assert _python(code) == "[]"


def test_the_public_api_is_there_on_first_use():
    assert _python("import recall_dask; print(recall_dask.recall.__module__)") == "recall_dask.api"
