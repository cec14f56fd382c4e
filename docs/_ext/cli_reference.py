"""The ``recall-dask-cli`` directive: the command line reference, generated from the argparse
parser of :mod:`recall_dask.cli`, so that every subcommand and option appears with its own
help text and none can drift from the code."""

from __future__ import annotations

import argparse

from _nodes import paragraph, table
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` by name, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The action's help as ``--help`` prints it, with ``%(default)s`` and the like expanded."""
    return " ".join(parser._get_formatter()._expand_help(action).split()) if action.help else ""


def option_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(option or argument, help) for every action of ``parser`` that ``--help`` shows."""
    rows = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            metavar = (
                ""
                if action.nargs == 0
                else " " + parser._get_formatter()._format_args(action, action.dest.upper())
            )
            name = ", ".join(action.option_strings) + metavar
        else:
            name = action.metavar or action.dest
        rows.append((name, _help(parser, action)))
    return rows


def _section(
    name: str, parser: argparse.ArgumentParser, summary: str, document: nodes.document
) -> nodes.section:
    """A section of one command: its summary and description, usage and options."""
    section = nodes.section(ids=[nodes.make_id(f"cli-{name}")])
    section += nodes.title(name, name)
    for text in (summary, parser.description):
        if text:
            section += paragraph(" ".join(text.split()))
    usage = parser.format_usage().strip()
    section += nodes.literal_block(usage, usage, language="text")
    rows = [
        [nodes.literal(option, option), paragraph(text)] for option, text in option_rows(parser)
    ]
    section += table(["option", "what it does"], rows, widths=[30, 70])
    document.note_implicit_target(section)
    return section


class CliReference(SphinxDirective):
    """Every subcommand of ``recall-dask``, each with its usage and a table of its options."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from recall_dask.cli import _parser

        parser = _parser()
        helps = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
        output: list[nodes.Node] = [_section("recall-dask", parser, "", self.state.document)]
        for name, sub in _subcommands(parser).items():
            title = f"recall-dask {name}"
            output.append(_section(title, sub, helps.get(name, ""), self.state.document))
        return output


def setup(app: Sphinx) -> dict:
    app.add_directive("recall-dask-cli", CliReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
