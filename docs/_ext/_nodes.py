"""docutils nodes for the generated reference pages: plain text, never parsed as markup, so
that a help text or a comment shows as the code has it."""

from __future__ import annotations

from docutils import nodes


def paragraph(text: str) -> nodes.paragraph:
    """A paragraph of plain text."""
    return nodes.paragraph(text, text)


def table(header: list[str], rows: list[list[nodes.Node]], widths: list[int]) -> nodes.table:
    """A table of the given column header and rows of cell contents."""
    group = nodes.tgroup(cols=len(header))
    group += [nodes.colspec(colwidth=width) for width in widths]
    head = nodes.thead()
    head += _row([paragraph(title) for title in header])
    body = nodes.tbody()
    body += [_row(cells) for cells in rows]
    group += [head, body]
    return nodes.table("", group)


def _row(cells: list[nodes.Node]) -> nodes.row:
    row = nodes.row()
    for content in cells:
        entry = nodes.entry()
        entry += content
        row += entry
    return row
