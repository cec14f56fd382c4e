"""recall_dask.pl: the plots of a finished run, on a record built by hand and on small real
runs (one draw, two draws, count splitting), each on a given ax or a new figure, and one clear
line when the run lacks what a plot draws."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import matplotlib
import numpy as np
import pytest
from conftest import hand_made_record, recorded_adata
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from recall_dask import pl
from recall_dask.api import recall
from recall_dask.errors import InputError
from recall_dask.io.results import ResultKeys
from recall_dask.simulate import simulate

matplotlib.use("Agg")

KEYS = ResultKeys.of("recall")
#: Three simulated groups, over-split at resolution 2 and calibrated back in a few iterations.
GROUPS = {"n_cells": 600, "n_genes": 600, "n_groups": 3, "de_prob": 0.05, "seed": 2}
RUN = {"n_hvg": 200, "seed": 1, "resolution_start": 2.0, "progress": False}


@pytest.fixture(scope="module")
def one_draw() -> ad.AnnData:
    return recall(simulate(**GROUPS, log_mean=-1.0), **RUN)


@pytest.fixture(scope="module")
def two_draws() -> ad.AnnData:
    adata = recall(simulate(**GROUPS, log_mean=-1.0), draws=2, **RUN)
    adata.obsm["X_umap"] = adata.obsm[KEYS.embedding][:, :2]  # any 2-D embedding will do
    return adata


@pytest.fixture(scope="module")
def countsplit() -> ad.AnnData:
    return recall(simulate(**GROUPS, log_mean=-1.0), method="countsplit", **RUN)


# -- what each plot draws, on a record built by hand -------------------------------------


def test_calibration_plots_clusters_resolution_and_failing_pairs(rng):
    ax = pl.calibration(recorded_adata(rng))
    twin = [other for other in ax.figure.axes if other is not ax][0]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [4, 3, 3])
    np.testing.assert_allclose(twin.lines[0].get_ydata(), [0.8, 0.64, 0.512])
    assert [t.get_text() for t in ax.texts] == ["0-2", "1-2"]


def test_heatmap_shows_selected_counts_with_a_blank_diagonal(rng):
    matrix = hand_made_record()["iterations"]["2"]["n_selected"]
    image = pl.selected_genes(recorded_adata(rng)).images[0].get_array()
    assert image.mask.tolist() == np.eye(3, dtype=bool).tolist()
    np.testing.assert_array_equal(image.data[~image.mask], matrix[~np.eye(3, dtype=bool)])


def test_heatmap_stars_the_pairs_of_a_merged_cluster(rng):
    adata = recorded_adata(rng)
    adata.uns["recall"]["stability"] = {"merges": {"merged_into": np.array([1])}}
    texts = [t.get_text() for t in pl.selected_genes(adata).texts]
    assert sorted(texts) == ["5", "5", "5*", "5*", "5*", "5*"]


def test_sizes_and_embedding(rng):
    adata = recorded_adata(rng, 121)
    assert [b.get_height() for b in pl.sizes(adata).patches] == [41, 40, 40]
    figure = Figure()
    axes = figure.subplots(1, 2)
    for ax, (title, column) in zip(
        axes, [("initial", KEYS.initial), ("recall", None)], strict=True
    ):
        assert pl.embedding(adata, color=column, title=title, ax=ax) is ax
    assert [a.get_title() for a in axes] == ["initial: 4 clusters", "recall: 3 clusters"]
    assert [len(a.texts) for a in axes] == [4, 3], "every cluster is named"


def test_markers_are_each_pairs_strongest_genes_coloured_by_direction(rng):
    ax = pl.markers(recorded_adata(rng), n_genes=1, pairs=[(0, 1), (1, 2)])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["0 vs 1: CD3E \u21910", "1 vs 2: <NKG7> \u21911"]
    assert [bar.get_width() for bar in ax.patches] == [12.5, 3.0]


# -- small real runs -------------------------------------------------------------------------


def test_every_plot_of_a_run_over_draws_draws_on_the_given_axes(two_draws):
    plots = [pl.calibration, pl.selected_genes, pl.stability, pl.markers, pl.sizes]
    for plot in plots:
        ax = Figure().subplots()
        assert plot(two_draws, ax=ax) is ax
        assert ax.has_data() or ax.images, plot.__name__
    ax = Figure().subplots()
    assert pl.confidence(two_draws, basis="X_umap", ax=ax) is ax
    confidence = ax.collections[0].get_array()
    np.testing.assert_allclose(np.sort(confidence), np.sort(two_draws.obs[KEYS.confidence]))
    stability = two_draws.uns["recall"]["stability"]
    bars = [b.get_height() for b in pl.stability(two_draws).patches]
    np.testing.assert_allclose(bars, stability["cluster_stability"])
    draws_ax = pl.calibration(two_draws)
    assert draws_ax.get_xlabel() == "resolution"
    assert len(draws_ax.get_xticklabels()) == len(stability["n_clusters"])


def test_plots_without_ax_make_a_figure(one_draw):
    for plot in (pl.calibration, pl.selected_genes, pl.markers, pl.sizes):
        ax = plot(one_draw)
        assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)


@pytest.mark.parametrize(
    ("plot", "fixture", "says"),
    [
        (pl.stability, "one_draw", "no stability: it comes from runs with --draws 2 or more"),
        (pl.confidence, "one_draw", "no stability: it comes from runs with --draws 2 or more"),
        (pl.markers, "countsplit", "no marker candidates: count splitting"),
        (pl.composition, "one_draw", "no batches: it comes from runs with --batch-key"),
        (pl.confidence, "two_draws", "no obsm['X_recall_umap']: pass basis="),
    ],
    ids=["stability-one-draw", "confidence-one-draw", "markers-countsplit", "batches", "basis"],
)
def test_a_plot_of_what_the_run_lacks_is_one_clear_line(plot, fixture, says, request):
    adata = request.getfixturevalue(fixture)
    with pytest.raises(InputError, match=f"^[^\n]*{says.replace('[', '.').replace(']', '.')}"):
        plot(adata)


def test_a_key_without_results_is_one_clear_line(one_draw):
    with pytest.raises(InputError, match="no recall results under key 'other'"):
        pl.calibration(one_draw, "other")


def test_countsplit_runs_draw_their_calibration_and_selected_genes(countsplit):
    assert pl.calibration(countsplit).lines
    assert pl.selected_genes(countsplit).images


def test_importing_recall_dask_and_its_plots_does_not_import_matplotlib():
    code = "import sys, recall_dask; recall_dask.pl; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_without_matplotlib_a_plot_says_what_to_install(one_draw, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "matplotlib" else find_spec(name, *args),
    )
    with pytest.raises(ImportError, match=r"^recall_dask.pl needs matplotlib: pip install"):
        pl.sizes(one_draw)
