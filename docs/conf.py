"""Sphinx configuration of the recall_dask manual: MyST pages, notebooks through myst-nb,
the API from docstrings, and the command line and tuning keys generated from the code
(``_ext/``), so that neither can drift. Nothing is fetched from the network."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "recall_dask"
author = "recall_dask developers"
copyright = "recall_dask developers"  # noqa: A001 (Sphinx's name)

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "cli_reference",
    "config_reference",
    "modules_reference",
]

# Docstrings are reST prose with Sphinx roles (no numpy or Google sections).
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# Type hints that name third-party classes: without intersphinx (no network at build time)
# they cannot be linked, which is not an error.
nitpicky = False

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks: the quick start runs at build time (about a minute on 2 cores, on the bundled
# PBMC 3k), so its figures are always those of the current code; the others need a cluster,
# SLURM or more time and are shown as committed, without outputs (tests/test_notebooks.py
# runs them all). A notebook that fails to run fails the build.
nb_execution_mode = "force"
nb_execution_excludepatterns = [
    "tutorials/02_out_of_core_zarr.ipynb",
    "tutorials/03_dask_clusters.ipynb",
    "tutorials/04_batches_sc_mixology.ipynb",
]
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store", "jupyter_execute"]

# Quotes stay as typed, so that help texts and comments quoted from the code read as there.
smartquotes = False

html_theme = "furo"
html_title = "recall_dask"
