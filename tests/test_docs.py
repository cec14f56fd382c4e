"""The manual: the README stays short, keeps its quick start and links only to files that
exist; the docs quote the command line's own help; and the built site (``docs/_build/html``,
which ``.ci/run`` builds before the tests) lists every subcommand, option, tuning key and
public plot, and shows its pages in headless Chromium with every image loaded."""

from __future__ import annotations

import argparse
import html
import os
import re
from pathlib import Path

import pytest
import yaml
from chromium import CHROMIUM, check_page

from recall_dask import pl
from recall_dask.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BUILT = ROOT / "docs" / "_build" / "html"
ARTIFACTS = Path(os.environ.get("RECALL_ARTIFACTS", ROOT / "ci-artifacts"))
QUICK_START = """## Quick start

```bash
pip install '.[report]' && recall-dask demo
pip install '.[test]' && pytest
```
"""
#: Markdown links and images: [text](target) and ![alt](target).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
needs_site = pytest.mark.skipif(
    not (BUILT / "index.html").exists(),
    reason="the docs are not built (sphinx-build -W --keep-going -b html docs docs/_build/html)",
)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"recall-dask": parser, **{f"recall-dask {n}": p for n, p in commands.choices.items()}}


def _help(command: str, option: str) -> str:
    """An option's help as ``--help`` prints it, on one line."""
    parser = _subcommands()[command]
    action = next(a for a in parser._actions if option in a.option_strings)
    return " ".join(parser._get_formatter()._expand_help(action).split())


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)}


def _text(page: Path) -> str:
    """A built page's text, tags removed and whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.read_text())).split())


def test_readme_is_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= 200


def test_readme_keeps_its_quick_start_commands():
    assert QUICK_START in README.read_text()


def test_every_relative_link_in_the_readme_resolves():
    links = [t for t in LINK.findall(README.read_text()) if not re.match(r"[a-z]+:", t)]
    assert len(links) > 10, "the README links into the manual"
    for link in links:
        path, _, anchor = link.partition("#")
        target = (README.parent / path).resolve() if path else README
        assert target.exists(), f"README links to {link}, which does not exist"
        if anchor:
            assert anchor in _anchors(target), f"README links to {link}: no such heading"


def test_the_docs_quote_the_help_of_draws_and_agreement():
    """docs/howto/draws.md quotes `recall-dask run --help` for both options, word for word."""
    page = " ".join((ROOT / "docs" / "howto" / "draws.md").read_text().split())
    for option in ("--draws", "--agreement"):
        assert f"`{option}` : {_help('recall-dask run', option)}" in page, option


def test_every_public_function_and_class_has_a_docstring():
    """What the API reference renders: the public modules' functions and classes, and their
    methods, each with a docstring of its own."""
    import inspect

    import recall_dask.api
    import recall_dask.io
    import recall_dask.report
    import recall_dask.simulate

    modules = [pl, recall_dask.io, recall_dask.report, recall_dask.api, recall_dask.simulate]
    missing = []
    for module in modules:
        # A module without __all__ documents what it defines, not what it imports.
        defined = [
            n for n, o in vars(module).items() if getattr(o, "__module__", None) == module.__name__
        ]
        for name in getattr(module, "__all__", defined):
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or name.startswith("_"):
                continue
            members = [obj, *(m for n, m in vars(obj).items() if not n.startswith("_"))]
            for member in members if inspect.isclass(obj) else [obj]:
                function = getattr(member, "__func__", member)
                if callable(function) and not (function.__doc__ or "").strip():
                    missing.append(f"{module.__name__}.{name}.{getattr(function, '__name__', '')}")
    assert missing == []


@needs_site
def test_cli_reference_shows_every_subcommand_and_option_with_its_help():
    page = _text(BUILT / "reference" / "cli.html")
    for command, parser in _subcommands().items():
        assert command in page
        for action in parser._actions:
            for option in action.option_strings:
                assert option in page, f"{command} {option}"
    for option in ("--draws", "--agreement"):
        assert _help("recall-dask run", option) in page, option


@needs_site
def test_config_reference_shows_every_tuning_key():
    shipped = yaml.safe_load((ROOT / "recall_dask" / "recall_dask.yaml").read_text())["recall"]
    page = _text(BUILT / "reference" / "config.html")
    for key in shipped:
        assert f"recall.{key}" in page


@needs_site
def test_api_reference_documents_the_public_api():
    page = (BUILT / "reference" / "api.html").read_text()
    names = [f"recall_dask.pl.{name}" for name in pl.__all__]
    names += ["recall_dask.api.recall", "recall_dask.api.recall_store"]
    names += ["recall_dask.report.write_report", "recall_dask.simulate.simulate"]
    for name in names:
        assert f'id="{name}"' in page, name


@needs_site
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/chromium-up)")
@pytest.mark.parametrize(
    ("page", "shows", "figures"),
    [
        ("index.html", "Clustering single cells at a default resolution over-clusters", 0),
        ("tutorials/01_quick_start_pbmc3k.html", "How the calibration went", 5),
    ],
    ids=["index", "quick-start"],
)
def test_pages_render_in_chromium(page, shows, figures):
    check = check_page(BUILT / page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"docs-{Path(page).stem}.png").write_bytes(check.screenshot)
    assert check.problems() == []
    assert shows in check.text
    plotted = [i for i in check.images if i["width"] > 100 and i["height"] > 100]
    assert len(plotted) >= figures, "the notebook ran at build time and its figures show"
