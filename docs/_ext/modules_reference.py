"""The ``recall-dask-modules`` directive: an ``automodule`` of every module of the package
but the private ones and those named in ``:exclude:``, found by walking the package, so that a
module added to a stage appears in the reference without editing it."""

from __future__ import annotations

import pkgutil

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def stage_modules(exclude: set[str]) -> list[str]:
    """Every public module of recall_dask, packages before their modules, but those in
    ``exclude`` and those under a package ``exclude`` names as ``package.*``."""
    import recall_dask

    names = [
        info.name
        for info in pkgutil.walk_packages(recall_dask.__path__, "recall_dask.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return [
        name
        for name in sorted(names)
        if name not in exclude
        and not any(name.startswith(e[:-1]) for e in exclude if e.endswith(".*"))
    ]


class ModulesReference(SphinxDirective):
    """One heading and one ``automodule`` with its members per stage module."""

    option_spec = {"exclude": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        exclude = set(self.options.get("exclude", "").split())
        # The page is MyST, and autodoc writes reST: each module goes in an eval-rst block.
        # A package's members are those it defines, not those it imports from its modules,
        # which are documented there (so that each name has one target).
        text = "\n".join(
            f"```{{eval-rst}}\n.. rubric:: {name}\n   :heading-level: 2\n\n"
            f".. automodule:: {name}\n   :members:\n   :ignore-module-all:\n"
            "   :show-inheritance:\n```\n"
            for name in stage_modules(exclude)
        )
        return self.parse_text_to_nodes(text)


def setup(app: Sphinx) -> dict:
    app.add_directive("recall-dask-modules", ModulesReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
