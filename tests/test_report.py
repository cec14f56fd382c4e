"""The HTML report: figures from the record, the page, the stored markers, the commands, and
the page as a browser shows it (headless Chromium)."""

from __future__ import annotations

import base64
import importlib.util
import logging
import os
import re
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from chromium import CHROMIUM, check_page
from conftest import recorded_adata
from PIL import Image

from recall_dask import cli
from recall_dask.api import recall
from recall_dask.cli import main
from recall_dask.io import ingest, open_counts, read_results, write_results
from recall_dask.io.results import LEGACY_KEYS, ResultKeys
from recall_dask.io.storage import Location
from recall_dask.params import RecallParams
from recall_dask.report import default_clusters, render_report, write_report
from recall_dask.simulate import write_simulated

#: Three simulated groups that recall reaches in three iterations (5 -> 4 -> 3 clusters).
GROUPS = {"n_cells": 1000, "n_genes": 1000, "n_groups": 3, "de_prob": 0.05, "seed": 2}
RUN = ["--n-hvg", "300", "--seed", "1", "--n-workers", "1", "--quiet"]
ARTIFACTS = Path(os.environ.get("RECALL_ARTIFACTS", Path(__file__).parents[1] / "ci-artifacts"))
KEYS = ResultKeys.of("recall")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (CI installs it: .ci/chromium-up)"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``recall-dask run --report --compare-default`` on simulated counts, one worker, from a
    resolution high enough that the first clusters over-split the three groups."""
    tmp = tmp_path_factory.mktemp("report")
    counts, out = tmp / "counts.zarr", tmp / "out.zarr"
    write_simulated(counts, **GROUPS, log_mean=-1.0)
    report = ["--report", "--compare-default", "--resolution-start", "2"]
    assert main(["run", str(counts), "-o", str(out), *report, *RUN]) == 0
    return out


# -- figures and page from a record --------------------------------------------------------


class _Page(HTMLParser):
    """Tags, attributes and table cells of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parsed(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


@pytest.mark.parametrize("compare_default", [False, True])
def test_page_is_self_contained_and_shows_the_record(rng, compare_default):
    adata = recorded_adata(rng)
    page = render_report(adata, KEYS, title="out.zarr", compare_default=compare_default)
    parsed = _parsed(page)
    images = [attrs["src"] for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 4  # UMAP, trace, heatmap, sizes
    for src in images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        with Image.open(BytesIO(base64.b64decode(src[len(prefix) :]))) as png:
            assert png.format == "PNG" and min(png.size) > 100
    assert not {"script", "link", "iframe", "object"} & {tag for tag, _ in parsed.tags}
    links = [v for _, attrs in parsed.tags for k, v in attrs.items() if k in ("src", "href")]
    assert all(link.startswith("data:") for link in links), "nothing to fetch"
    umap = Image.open(BytesIO(base64.b64decode(images[0].split(",")[1])))
    assert umap.width > (1300 if compare_default else 900), "one panel per clustering"
    cells = parsed.cells
    assert "0 vs 2: 0 genes" in cells and "1 vs 2: 0 genes" in cells and "none: accepted" in cells
    assert "CD3E 12.5 \u21910" in cells and "MS4A1 9.2 \u21912" in cells, "W and direction"
    assert "<NKG7> 3.0 \u21911" in cells, "gene names are escaped, not markup"
    assert "seed" in cells and "7" in cells and "2099.1" in cells
    assert ("without recall" in page) == compare_default


def test_page_of_a_run_over_draws_shows_each_draw_and_the_stability(tmp_path):
    """With --draws the calibration shows every draw's clusters and verdict, and a stability
    section the per-cluster stability and the UMAP coloured by confidence."""
    counts, out = tmp_path / "counts.zarr", tmp_path / "out.zarr"
    write_simulated(counts, **GROUPS, log_mean=-1.0)
    assert main(["run", str(counts), "-o", str(out), "--report", "--draws", "3", *RUN]) == 0
    page = out.with_suffix(".html").read_text()
    parsed = _parsed(page)
    images = [attrs["src"] for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 6  # UMAP, draws, stability, confidence UMAP, heatmap, sizes
    record = read_results(out).uns["recall"]
    first = record["iterations"]["0"]
    clusters = " ".join(str(k) for k in first["n_clusters"])
    assert clusters in parsed.cells
    assert str(first["n_stopped"]) in parsed.cells
    last = record["iterations"][str(record["n_iterations"] - 1)]
    assert int(last["n_stopped"]) == 3, "the loop ends when every draw has stopped"
    assert "draws stopped" in page and "recall_confidence" in page
    assert "No consensus pair needed merging." in page


def test_page_of_a_run_with_batches_shows_them(tmp_path):
    """With --batch-key the UMAP is of Harmony's embedding, and a batch section shows the
    UMAP coloured by batch, each cluster's composition as bars and its mixing."""
    counts, out = tmp_path / "counts.zarr", tmp_path / "out.zarr"
    write_simulated(counts, **GROUPS, log_mean=-1.0, batches=3, batch_depth=[1, 1.5, 1])
    assert main(["run", str(counts), "-o", str(out), "--report", "--batch-key", "batch", *RUN]) == 0
    page = out.with_suffix(".html").read_text()
    parsed = _parsed(page)
    images = [attrs["src"] for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 6  # UMAP, batch UMAP, composition, trace, heatmap, sizes
    assert "X_recall_harmony" in page and "recall_batch" in page and "Batch composition" in page
    stored = read_results(out)
    assert KEYS.graph_embedding(stored.obsm) == "X_recall_harmony"
    record = stored.uns["recall"]["batches"]
    composition, mixing, names = record["composition"], record["mixing"], record["names"]
    table = [
        cell
        for c in range(composition.shape[0])
        for cell in (
            str(c),
            f"{composition[c].sum():,}",
            f"{mixing[c]:.2f}",
            names[composition[c].argmax()],
        )
    ]
    starts = [i for i in range(len(parsed.cells)) if parsed.cells[i : i + len(table)] == table]
    assert starts, (table, parsed.cells)


# -- the run's store and report ------------------------------------------------------------


def test_run_writes_the_report_beside_the_store(run):
    assert run.with_suffix(".html").is_file()
    adata = read_results(run)
    assert adata.obsm["X_recall_umap"].shape == (adata.n_obs, 2)
    assert adata.obs["recall_default"].nunique() >= 2
    record = adata.uns["recall"]
    assert record["n_iterations"] >= 2, "the page shows failing pairs"


def test_markers_in_the_store_are_each_pairs_strongest_genes(run):
    record = read_results(run).uns["recall"]
    final = record["iterations"][str(record["n_iterations"] - 1)]["n_selected"]
    markers = pd.DataFrame(record["markers"])
    assert set(markers.columns) == {"cluster_a", "cluster_b", "gene", "W", "higher_in"}
    assert set(markers["gene"]) <= set(record["variable_genes"])
    k = final.shape[0]
    for a in range(k):
        for b in range(a + 1, k):
            pair = markers[(markers["cluster_a"] == a) & (markers["cluster_b"] == b)]
            assert len(pair) == min(10, final[a, b])
            assert (pair["W"] > 0).all() and pair["W"].is_monotonic_decreasing
            assert pair["gene"].is_unique
            assert pair["higher_in"].isin([a, b]).all()


def test_report_command_reuses_the_stored_umap_and_clusters(run, tmp_path):
    again = tmp_path / "again.html"
    assert main(["report", str(run), "-o", str(again), "--compare-default", "--quiet"]) == 0
    assert again.read_bytes() == run.with_suffix(".html").read_bytes(), "deterministic page"
    plain = tmp_path / "plain.html"
    assert main(["report", str(run), "-o", str(plain), "--quiet"]) == 0
    assert "without recall" not in plain.read_text()


def test_default_clusters_do_not_depend_on_chunking(run):
    adata = read_results(run)
    params = RecallParams(**adata.uns["recall"]["params"])
    counts = open_counts(run, chunk_size=37).X
    labels = default_clusters(counts, adata.var, adata.uns["recall"]["variable_genes"], params)
    np.testing.assert_array_equal(labels, adata.obs["recall_default"].cat.codes)


def test_report_of_a_store_in_an_object_store(run):
    """Store and page at URLs (fsspec's memory filesystem): the UMAP is written back there."""
    root = Location.of("memory://recall-report-test")
    root.remove()
    try:
        store = f"{root.url}/out.zarr"
        recall(run.parent / "counts.zarr", out=store, seed=1, n_hvg=300)
        assert write_report(store).url == f"{root.url}/out.html"
        page = root.fs.cat_file(f"{root.path}/out.html").decode()
        assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 4
        assert read_results(store).obsm["X_recall_umap"].shape == (GROUPS["n_cells"], 2)
    finally:
        root.remove()


def test_results_store_is_plain_anndata(run):
    """anndata reads a finished store: X is the input counts, the results sit under
    scanpy's names, and scanpy draws the stored UMAP coloured by the clusters."""
    adata = ad.read_zarr(run)
    counts = ad.read_zarr(run.parent / "counts.zarr")
    assert (adata.X != counts.X).nnz == 0 and adata.X.dtype == np.float32
    assert adata.obsm["X_recall_pca"].shape == (adata.n_obs, 50) and "X_pca" not in adata.obsm
    assert adata.uns["recall"]["n_clusters"] == adata.obs["recall"].nunique()
    sc = pytest.importorskip("scanpy", reason="scanpy is not installed")
    ax = sc.pl.embedding(adata, basis="X_recall_umap", color="recall", show=False)
    shown = [text.get_text() for text in ax.get_legend().get_texts()]
    assert shown == list(adata.obs["recall"].cat.categories)


def test_report_of_a_store_written_before_key_added(run, tmp_path):
    """A store with the old names (obs['recall_clusters'], obsm['X_pca'], ...) still reports,
    and its UMAP goes where its other results are."""
    store = tmp_path / "old.zarr"
    ingest(run.parent / "counts.zarr", store)
    new = read_results(run)
    obs = new.obs[[]].assign(
        **{LEGACY_KEYS.labels: new.obs[KEYS.labels], LEGACY_KEYS.initial: new.obs[KEYS.initial]}
    )
    embedding = new.obsm[KEYS.embedding]
    uns = {LEGACY_KEYS.record: new.uns[KEYS.record]}
    write_results(store, obs=obs, obsm={LEGACY_KEYS.embedding: embedding}, uns=uns)
    assert main(["report", str(store), "--quiet"]) == 0
    page = (tmp_path / "old.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "obsm['X_pca']" in page
    old = read_results(store)
    assert old.obsm[LEGACY_KEYS.umap].shape == (old.n_obs, 2) and KEYS.umap not in old.obsm
    np.testing.assert_array_equal(old.obsm[LEGACY_KEYS.embedding], embedding)
    assert main(["report", str(store), "--key-added", "other", "--quiet"]) == 2


# -- errors --------------------------------------------------------------------------------


@pytest.fixture
def without_report_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a)
    )


def test_missing_extra_is_one_line_before_any_work(without_report_extra, run, tmp_path, capsys):
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 2
    out = tmp_path / "new.zarr"
    assert main(["run", str(run), "-o", str(out), "--report", *RUN]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("pip install 'recall-dask[report]'" in e for e in errors)
    assert not out.exists() and not (tmp_path / "r.html").exists()


def test_demo_skips_its_report_without_the_extra(without_report_extra, caplog):
    args = cli._parser().parse_args(["demo"])
    assert args.report == "recall_demo.html"
    assert args.draws == cli.DEMO_DRAWS > 1, "the demo shows the stable answer"
    with caplog.at_level(logging.WARNING, logger="recall_dask"):
        assert cli._report_path(args) is None
    assert "no report" in caplog.text and "recall-dask[report]" in caplog.text


def test_report_path_options():
    parse = cli._parser().parse_args
    assert cli._report_path(parse(["run", "in", "-o", "s3://b/out.zarr", "--report"])) == (
        "s3://b/out.html"
    )
    assert cli._report_path(parse(["run", "in", "-o", "o.zarr", "--report", "r.html"])) == "r.html"
    assert cli._report_path(parse(["run", "in", "-o", "o.zarr", "--compare-default"])) == "o.html"
    assert cli._report_path(parse(["run", "in", "-o", "o.zarr"])) is None
    assert cli._report_path(parse(["demo", "--no-report"])) is None


def test_store_without_results_is_an_input_error(tmp_path, capsys):
    store = tmp_path / "counts.zarr"
    write_simulated(tmp_path / "sim.zarr", 50, 30, 1)
    ingest(tmp_path / "sim.zarr", store)
    assert main(["report", str(store)]) == 2
    assert "no recall results" in capsys.readouterr().err
    assert not (tmp_path / "counts.html").exists()


# -- in a browser ------------------------------------------------------------------------


@needs_chromium
def test_report_renders_in_chromium(run):
    check = check_page(run.with_suffix(".html"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report.png").write_bytes(check.screenshot)
    (ARTIFACTS / "report.html").write_bytes(run.with_suffix(".html").read_bytes())
    assert check.problems() == []
    assert len(check.images) == 4 and all(i["width"] > 100 for i in check.images)
    assert all(url.startswith(("file:", "data:")) for url in check.requests)
    with Image.open(BytesIO(check.screenshot)) as shot:
        assert shot.width >= 1200 and shot.height > 1500, "the whole page"


@needs_chromium
def test_broken_pages_are_caught(run, tmp_path):
    """The browser check fails for real: a corrupt image, a script error, a fetch."""
    page = run.with_suffix(".html").read_text()
    payload = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    broken = tmp_path / "broken.html"
    broken.write_text(
        page.replace(payload, base64.b64encode(b"not a png").decode(), 1).replace(
            "</body>",
            '<img src="http://127.0.0.1:9/x.png"><script>undefinedFunction()</script></body>',
        )
    )
    problems = check_page(broken).problems()
    assert sum(p.startswith("image not loaded: data:image/png") for p in problems) == 1
    assert any(p.startswith("image not loaded: http://127.0.0.1:9/x.png") for p in problems)
    assert any("undefinedFunction" in p for p in problems)
    assert "fetched: http://127.0.0.1:9/x.png" in problems
