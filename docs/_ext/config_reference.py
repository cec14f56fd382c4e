"""The ``recall-dask-config`` directive: the tuning keys of ``recall_dask/recall_dask.yaml``
as a table of key, default and meaning, the meaning being the comment above the key in the
YAML itself, so that the reference cannot drift from the shipped defaults."""

from __future__ import annotations

from importlib.resources import files

import yaml
from _nodes import paragraph, table
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def commented_keys(text: str) -> tuple[str, list[tuple[str, object, str]]]:
    """The file's leading comment, and (key, default, comment) for every key under
    ``recall:``; keys that follow one another without a comment between share the comment
    above the first."""
    defaults = yaml.safe_load(text)["recall"]
    header: list[str] = []
    comment: list[str] = []
    shared = ""
    keys = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if not inside:
            if stripped.startswith("#"):
                header.append(stripped.lstrip("# "))
            inside = stripped == "recall:"
            continue
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
        elif ":" in stripped:
            key = stripped.split(":", 1)[0]
            shared = " ".join(comment) if comment else shared
            comment = []
            keys.append((key, defaults[key], shared))
    return " ".join(header), keys


def _shown(value: object) -> str:
    return "null" if value is None else str(value)


class ConfigReference(SphinxDirective):
    """The table of the shipped tuning keys, from the YAML that ships them."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        source = files("recall_dask") / "recall_dask.yaml"
        self.env.note_dependency(str(source))
        header, keys = commented_keys(source.read_text())
        rows = [
            [nodes.literal(f"recall.{key}", f"recall.{key}"), paragraph(_shown(value)),
             paragraph(meaning)]
            for key, value, meaning in keys
        ]  # fmt: skip
        return [paragraph(header), table(["key", "default", "what"], rows, widths=[25, 12, 63])]


def setup(app: Sphinx) -> dict:
    app.add_directive("recall-dask-config", ConfigReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
