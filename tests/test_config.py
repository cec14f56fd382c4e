"""The tuning knobs live in dask config under ``recall``, shipped in recall_dask.yaml."""

from __future__ import annotations

import os
import subprocess
import sys

import dask

from recall_dask import config


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


def test_an_environment_variable_overrides_a_knob():
    code = "from recall_dask import config; print(config.get('gram-partials'))"
    assert _python(code, DASK_RECALL__GRAM_PARTIALS="3") == "3"
