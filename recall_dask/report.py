"""An HTML report of a recall run, to decide from pictures whether the clusters hold.

One self-contained page from a store that ``recall-dask run`` wrote: figures as base64 PNG,
inline CSS, no scripts, nothing fetched. It shows a UMAP coloured by the initial and the
calibrated clusters (and, on request, by the standard clustering without artificial genes),
the iteration trace with each iteration's failing pair, the selected-gene counts of the final
cluster pairs, the cluster sizes, each pair's strongest knockoff-selected genes as marker
candidates, and the parameters and versions.

The UMAP (``obsm['X_umap']``) and the standard clustering (``obs['default_clusters']``) are
computed once and stored in the store, so that a second report reuses them. Plotting needs
the ``report`` extra (umap-learn, matplotlib).
"""

from __future__ import annotations

import base64
import html
import importlib.util
import logging
import os
from collections.abc import Collection
from io import BytesIO

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd

from recall_dask.api import categorical_labels
from recall_dask.errors import InputError
from recall_dask.graph import cluster_graph
from recall_dask.io import open_counts, read_results, write_results
from recall_dask.io.storage import Location, StorageOptions
from recall_dask.params import RecallParams
from recall_dask.preprocess.normalize import log_normalized
from recall_dask.run import embed, neighbor_graph

logger = logging.getLogger(__name__)

#: Seurat's ``RunUMAP`` defaults (uwot): 30 neighbours, min_dist 0.3, cosine distance, and its
#: fixed ``seed.use = 42``. A seed makes umap-learn run single-threaded, and so deterministic.
UMAP_OPTIONS = {"n_neighbors": 30, "min_dist": 0.3, "metric": "cosine", "random_state": 42}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 80rem; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
p.note { color: #555; font-size: .92rem; max-width: 60rem; }
img { max-width: 100%; height: auto; display: block; margin: .6rem 0; }
table { border-collapse: collapse; font-size: .9rem; margin: .6rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td:first-child { white-space: nowrap; }
span.gene { display: inline-block; margin-right: .8rem; white-space: nowrap; }
span.gene small { color: #666; }
.columns { display: flex; flex-wrap: wrap; gap: 2.5rem; }
"""


def require_extra() -> None:
    """Raise InputError unless the report's plotting libraries are installed."""
    for module, package in (("umap", "umap-learn"), ("matplotlib", "matplotlib")):
        if importlib.util.find_spec(module) is None:
            raise InputError(f"the report needs {package}: pip install 'recall-dask[report]'")


def report_path_for(store: str | os.PathLike) -> str:
    """Where the report of ``store`` goes by default: ``OUT.zarr`` -> ``OUT.html`` beside it."""
    text = os.fspath(store).rstrip("/")
    return (text[: -len(".zarr")] if text.lower().endswith(".zarr") else text) + ".html"


def write_report(
    store: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    compare_default: bool = False,
    storage_options: StorageOptions = None,
) -> Location:
    """Write the HTML report of the recall results in ``store`` to ``out`` (a path or URL;
    default :func:`report_path_for`) and return where it went.

    ``compare_default`` adds the standard clustering of the original data, without artificial
    genes, at the starting resolution: what a user would have got without recall. The UMAP
    and that clustering are added to the store unless it already holds them. Runs on the
    active Dask client, if any.
    """
    require_extra()
    adata = read_results(store, storage_options=storage_options)
    if "recall" not in adata.uns or "recall_clusters" not in adata.obs:
        raise InputError(f"{store}: no recall results; write them with `recall-dask run`")
    # Runs made before --neighbors existed searched exactly.
    params = RecallParams(**{"neighbors": "exact", **adata.uns["recall"]["params"]})
    missing_umap = "X_umap" not in adata.obsm
    if missing_umap:
        adata.obsm["X_umap"] = umap_embedding(adata.obsm["X_pca"], params.dims)
    missing_default = compare_default and "default_clusters" not in adata.obs
    if missing_default:
        counts = open_counts(store, storage_options=storage_options).X
        labels = default_clusters(counts, adata.var, adata.uns["recall"]["variable_genes"], params)
        adata.obs["default_clusters"] = categorical_labels(labels, adata.obs_names)
    if missing_umap or missing_default:
        write_results(
            store,
            obs=adata.obs,
            obsm={"X_umap": adata.obsm["X_umap"]},
            uns={},
            storage_options=storage_options,
        )
    target = Location.of(report_path_for(store) if out is None else out, storage_options)
    page = render_report(
        adata, title=str(Location.of(store, storage_options)), compare_default=compare_default
    )
    try:
        target.fs.pipe_file(target.path, page.encode("utf-8"))
    except OSError as error:
        raise InputError(f"cannot write the report {target}: {error}") from error
    logger.info("wrote the report %s", target)
    return target


def umap_embedding(pca: np.ndarray, dims: int) -> np.ndarray:
    """2-D UMAP of the first ``dims`` PCs, as Seurat's ``RunUMAP(dims = 1:dims)``."""
    import umap

    options = {**UMAP_OPTIONS, "n_neighbors": min(UMAP_OPTIONS["n_neighbors"], len(pca) - 1)}
    logger.info("UMAP of %d cells on %d PCs ...", len(pca), dims)
    model = umap.UMAP(n_components=2, n_jobs=1, **options)
    return model.fit_transform(np.ascontiguousarray(pca[:, :dims], dtype=np.float32))


def default_clusters(
    counts: da.Array, var: pd.DataFrame, variable_genes: np.ndarray, params: RecallParams
) -> np.ndarray:
    """The standard clustering without recall: the run's variable genes of the original counts,
    log-normalized (library size of all genes), scaled, exact PCA, kNN and SNN on ``dims`` PCs,
    and one clustering at ``resolution_start``. Streams row chunks like the run itself."""
    genes = np.flatnonzero(var.index.isin(variable_genes))
    if genes.size != len(variable_genes):
        raise InputError("the store's variable genes are not unique names in var")
    logger.info(
        "standard clustering of the %d variable genes, without artificial genes", genes.size
    )
    embedding = embed(log_normalized(counts, genes, params.target_sum), params)
    snn = neighbor_graph(embedding, params)
    return cluster_graph(snn, params.resolution_start, algorithm=params.algorithm, seed=0)


# -- figures -----------------------------------------------------------------------------


def _palette(n: int) -> np.ndarray:
    """``n`` distinguishable RGBA colours, one per cluster."""
    from matplotlib import colormaps

    if n <= 20:
        return colormaps["tab10" if n <= 10 else "tab20"](np.arange(n))
    return colormaps["turbo"](np.linspace(0.05, 0.95, n))


def _figure(width: float, height: float):
    """A matplotlib figure drawn by Agg, apart from pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_data_uri(figure) -> str:
    """The figure as an inline ``data:image/png;base64,...`` URI."""
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def umap_figure(umap: np.ndarray, panels: dict[str, pd.Series]):
    """One UMAP panel per clustering, each cluster in its colour and named at its median."""
    from matplotlib import patheffects

    figure = _figure(4.6 * len(panels), 4.9)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    size = float(np.clip(3e4 / len(umap), 0.2, 12))
    order = np.random.default_rng(0).permutation(len(umap))  # no cluster hides another
    outline = [patheffects.withStroke(linewidth=3, foreground="white")]
    for ax, (title, labels) in zip(axes, panels.items(), strict=True):
        codes = labels.cat.codes.to_numpy()
        names = labels.cat.categories
        colours = _palette(len(names))
        ax.scatter(*umap[order].T, c=colours[codes[order]], s=size, linewidths=0, rasterized=True)
        for code, name in enumerate(names):
            if (codes == code).any():
                x, y = np.median(umap[codes == code], axis=0)
                ax.text(
                    x,
                    y,
                    name,
                    ha="center",
                    va="center",
                    fontsize=10,
                    weight="bold",
                    path_effects=outline,
                )
        ax.set(title=f"{title}: {len(names)} clusters", xticks=[], yticks=[])
        ax.set(xlabel="UMAP 1", ylabel="UMAP 2")
    return figure


def trace_figure(trace: list[dict]):
    """Clusters and resolution per iteration, each rejected iteration marked with its failing
    pair."""
    steps = np.arange(1, len(trace) + 1)
    figure = _figure(7.5, 3.6)
    ax = figure.subplots()
    ax.plot(steps, [it["n_clusters"] for it in trace], "o-", color="C0", label="clusters")
    for step, it in zip(steps, trace, strict=True):
        if len(it["failing_pair"]):
            a, b = it["failing_pair"]
            ax.annotate(
                f"{a}-{b}",
                (step, it["n_clusters"]),
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                fontsize=8,
                color="C3",
            )
    ax.set(xlabel="iteration", ylabel="clusters", xticks=steps)
    ax.margins(y=0.2)
    twin = ax.twinx()
    twin.plot(steps, [it["resolution"] for it in trace], "s--", color="C1", label="resolution")
    twin.set_ylabel("resolution")
    figure.legend(loc="outside upper center", ncols=2, frameon=False)
    return figure


def draws_figure(stability: dict):
    """Clusters of every draw at every resolution: filled where the draw passed (every pair
    selects a gene), with how many draws passed."""
    from matplotlib.ticker import MaxNLocator

    n_clusters = np.asarray(stability["n_clusters"])
    passed = np.asarray(stability["passed"], dtype=bool)
    steps = np.arange(1, n_clusters.shape[0] + 1)
    figure = _figure(7.5, 3.6)
    ax = figure.subplots()
    offsets = np.linspace(-0.25, 0.25, n_clusters.shape[1])
    x = steps[:, None] + offsets[None, :]
    ax.scatter(x[~passed], n_clusters[~passed], facecolors="none", edgecolors="C3", s=18)
    ax.scatter(x[passed], n_clusters[passed], color="C2", s=18)
    for step, row in zip(steps, passed, strict=True):
        ax.annotate(
            f"{int(row.sum())}/{row.size}",
            (step, n_clusters.max()),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    ax.set(xlabel="iteration", ylabel="clusters per draw", xticks=steps)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(y=0.18)
    ax.set_title("each draw: passed (filled) or some pair selected nothing (open)", fontsize=9)
    return figure


def stability_figure(cluster_stability: np.ndarray):
    """Each final cluster's stability: the mean confidence of its cells."""
    k = len(cluster_stability)
    figure = _figure(float(np.clip(1.5 + 0.4 * k, 4, 12)), 3.4)
    ax = figure.subplots()
    bars = ax.bar(np.arange(k), cluster_stability, color=_palette(k))
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set(xticks=np.arange(k), xlabel="recall cluster", ylabel="stability", ylim=(0, 1.1))
    return figure


def confidence_figure(umap: np.ndarray, confidence: np.ndarray):
    """The UMAP coloured by each cell's confidence: the fraction of draws that agree."""
    figure = _figure(5.6, 4.9)
    ax = figure.subplots()
    size = float(np.clip(3e4 / len(umap), 0.2, 12))
    order = np.argsort(-confidence, kind="stable")  # the least confident on top
    points = ax.scatter(
        *umap[order].T,
        c=confidence[order],
        s=size,
        cmap="magma",
        vmin=0,
        vmax=1,
        linewidths=0,
        rasterized=True,
    )
    figure.colorbar(points, ax=ax, label="recall_confidence", shrink=0.8)
    ax.set(title="confidence of each cell", xticks=[], yticks=[], xlabel="UMAP 1")
    ax.set_ylabel("UMAP 2")
    return figure


def selected_heatmap(n_selected: np.ndarray):
    """Genes selected for every cluster pair (diagonal blank), counts written in if few."""
    from matplotlib import colormaps

    k = n_selected.shape[0]
    side = float(np.clip(1.5 + 0.45 * k, 3.5, 10))
    figure = _figure(side + 1.2, side)
    ax = figure.subplots()
    values = np.ma.masked_less(n_selected, 0)
    image = ax.imshow(values, cmap=colormaps["viridis"].with_extremes(bad="#e8e8e8"))
    if k <= 16:
        for a, b in zip(*np.nonzero(~np.ma.getmaskarray(values)), strict=True):
            ink = "black" if image.norm(values[a, b]) > 0.5 else "white"
            ax.text(b, a, int(values[a, b]), ha="center", va="center", fontsize=8, color=ink)
    ax.set(xticks=range(k), yticks=range(k), xlabel="cluster", ylabel="cluster")
    figure.colorbar(image, ax=ax, label="genes selected", shrink=0.8)
    return figure


def sizes_figure(labels: pd.Series):
    """Cells per cluster, in the colours of the UMAP."""
    sizes = labels.value_counts(sort=False).reindex(labels.cat.categories)
    figure = _figure(float(np.clip(1.5 + 0.4 * len(sizes), 4, 12)), 3.4)
    ax = figure.subplots()
    bars = ax.bar(np.arange(len(sizes)), sizes.to_numpy(), color=_palette(len(sizes)))
    ax.bar_label(bars, fontsize=8)
    ax.set(xticks=np.arange(len(sizes)), xlabel="recall cluster", ylabel="cells")
    ax.set_xticklabels(sizes.index.astype(str))
    ax.margins(y=0.12)
    return figure


# -- the page ----------------------------------------------------------------------------


def iteration_trace(record: dict) -> list[dict]:
    """``uns['recall']['iterations']`` as a list, first iteration first."""
    return [record["iterations"][str(i)] for i in range(int(record["n_iterations"]))]


def _image(figure, alt: str) -> str:
    return f'<img src="{png_data_uri(figure)}" alt="{html.escape(alt)}">'


def _table(header: list[str], rows: list[list[object]], numeric: Collection[int] = ()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _trace_table(trace: list[dict]) -> str:
    rows = []
    for number, it in enumerate(trace, start=1):
        pair = it["failing_pair"]
        verdict = f"{pair[0]} vs {pair[1]}: 0 genes" if len(pair) else "none: accepted"
        rows.append(
            [number, f"{it['resolution']:.4g}", it["n_clusters"], it["n_pairs_tested"], verdict]
        )
    header = ["iteration", "resolution", "clusters", "pairs tested", "failing pair"]
    return _table(header, rows, numeric={0, 1, 2, 3})


def _draws_table(trace: list[dict], needed: int) -> str:
    rows = []
    for number, it in enumerate(trace, start=1):
        clusters = " ".join(str(k) for k in np.asarray(it["n_clusters"]).tolist())
        passed = int(it["n_passed"])
        verdict = "accepted" if it["accepted"] else "lowered"
        rows.append(
            [number, f"{it['resolution']:.4g}", clusters, f"{passed} ({needed} needed)", verdict]
        )
    header = ["iteration", "resolution", "clusters per draw", "draws passed", "verdict"]
    return _table(header, rows, numeric={0, 1})


def final_selected(record: dict) -> np.ndarray:
    """Genes selected per pair of the final clusters (stores before ``--draws`` kept them in
    the last iteration only)."""
    if "n_selected" in record:
        return np.asarray(record["n_selected"])
    return np.asarray(iteration_trace(record)[-1]["n_selected"])


def _calibration_section(record: dict, trace: list[dict]) -> list[str]:
    if "stability" not in record:
        return [
            '<p class="note">Each iteration clusters at a lower resolution while some pair of '
            "clusters selects no gene (the failing pair, marked in red).</p>",
            _image(trace_figure(trace), "clusters and resolution per iteration"),
            _trace_table(trace),
        ]
    stability = record["stability"]
    needed = int(stability["needed"])
    return [
        f'<p class="note">{len(stability["draw_seeds"])} independent draws of the artificial '
        "genes, each with its own graph. A draw passes a resolution when every pair of its "
        f"clusters selects a gene; the resolution is accepted once {needed} draws pass. The "
        "clusters are the draws' consensus at that resolution: the medoid draw's clusters, "
        "each cell taking the label most draws give it.</p>",
        _image(draws_figure(stability), "clusters of every draw per iteration"),
        _draws_table(trace, needed),
    ]


def _stability_section(adata: ad.AnnData, record: dict) -> list[str]:
    if "stability" not in record:
        return []
    stability = np.asarray(record["stability"]["cluster_stability"])
    return [
        '<div class="columns"><div><h2>Stability</h2>',
        '<p class="note">A cell\'s confidence is the fraction of draws that give it its '
        "cluster (obs['recall_confidence']); a cluster's stability is the mean confidence of "
        "its cells.</p>",
        _image(stability_figure(stability), "stability of each cluster"),
        "</div><div>",
        _image(
            confidence_figure(adata.obsm["X_umap"], adata.obs["recall_confidence"].to_numpy()),
            "UMAP coloured by confidence",
        ),
        "</div></div>",
    ]


def _selection(record: dict, fdr: float) -> str:
    if record.get("method", "recall") == "countsplit":
        return f"genes with Bonferroni-adjusted p < {fdr:g} on the test half (count splitting)"
    return f"knockoff+ at q = {fdr:g}"


def _markers_section(record: dict, n_selected: np.ndarray) -> str:
    if "markers" not in record:
        return (
            '<p class="note">Count splitting selects genes by their p-values on the test half '
            "and has no knockoff W, so no marker candidates are listed.</p>"
        )
    return (
        '<p class="note">For each final pair, the selected genes with the largest W = '
        "-log10 p(gene) + log10 p(artificial twin) (Wilcoxon, two-sided): they tell the two "
        "clusters apart better than their null twins. W has no direction; the arrow names the "
        "cluster of the pair where the gene ranks higher.</p>"
        + _markers_table(record["markers"], n_selected)
    )


def _markers_table(markers: dict, n_selected: np.ndarray) -> str:
    columns = ("cluster_a", "cluster_b", "gene", "W", "higher_in")
    frame = pd.DataFrame({key: np.asarray(markers[key]) for key in columns})
    rows = []
    for (a, b), genes in frame.groupby(["cluster_a", "cluster_b"], sort=False):
        listed = " ".join(
            f'<span class="gene">{html.escape(str(g))} <small>{w:.1f} &uarr;{up}</small></span>'
            for g, w, up in zip(genes["gene"], genes["W"], genes["higher_in"], strict=True)
        )
        rows.append([f"{a} vs {b}", int(n_selected[a, b]), listed])
    if not rows:
        return "<p>One cluster: no pairs to tell apart.</p>"
    return _table(["pair", "genes selected", "strongest genes (W)"], rows, numeric={1})


def _key_values(header: list[str], values: dict) -> str:
    def shown(value: object) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    return _table(header, [[html.escape(str(k)), html.escape(shown(v))] for k, v in values.items()])


def render_report(adata: ad.AnnData, *, title: str, compare_default: bool = False) -> str:
    """The report page of an AnnData holding a run's results and ``obsm['X_umap']``."""
    record = adata.uns["recall"]
    trace = iteration_trace(record)
    final = final_selected(record)
    panels = {"initial": adata.obs["initial_clusters"], "recall": adata.obs["recall_clusters"]}
    if compare_default:
        panels["without recall"] = adata.obs["default_clusters"]
    fdr = record["params"]["fdr"]
    summary = (
        f"{adata.n_obs:,} cells. The first clustering (resolution {trace[0]['resolution']:.4g}) "
        f"found {len(adata.obs['initial_clusters'].cat.categories)} clusters; after "
        f"{len(trace)} iteration(s) recall keeps "
        f"{len(adata.obs['recall_clusters'].cat.categories)} (resolution "
        f"{trace[-1]['resolution']:.4g})."
    )
    if compare_default:
        summary += (
            f" Without artificial genes the same resolution gives "
            f"{len(adata.obs['default_clusters'].cat.categories)} clusters."
        )
    parts = [
        f"<h1>recall report</h1><p>{html.escape(title)}</p><p>{html.escape(summary)}</p>",
        "<h2>UMAP</h2>",
        '<p class="note">UMAP of the first '
        f"{record['params']['dims']} PCs of the augmented data (obsm['X_pca']). <b>initial</b>: "
        "the first clustering, before calibration; <b>recall</b>: the calibrated clusters"
        + (
            "; <b>without recall</b>: the standard clustering of the original data, no "
            "artificial genes, at the starting resolution"
            if compare_default
            else ""
        )
        + ".</p>",
        _image(umap_figure(adata.obsm["X_umap"], panels), "UMAP coloured by clusters"),
        "<h2>Calibration</h2>",
        *_calibration_section(record, trace),
        *_stability_section(adata, record),
        '<div class="columns"><div><h2>Genes selected per pair</h2>',
        f'<p class="note">Final clusters, {_selection(record, fdr)}.</p>',
        _image(selected_heatmap(final), "genes selected per cluster pair"),
        "</div><div><h2>Cluster sizes</h2>",
        _image(sizes_figure(adata.obs["recall_clusters"]), "cells per recall cluster"),
        "</div></div>",
        "<h2>Marker candidates</h2>",
        _markers_section(record, final),
        '<div class="columns"><div><h2>Parameters</h2>',
        _key_values(["parameter", "value"], record["params"]),
        "</div><div><h2>Versions</h2>",
        _key_values(["package", "version"], record["versions"]),
        "</div></div>",
    ]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>recall report: {html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
