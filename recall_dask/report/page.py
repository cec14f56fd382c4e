"""The report page: one self-contained HTML document (figures as base64 PNG, inline CSS, no
scripts, nothing fetched) from an AnnData holding a run's results and its UMAP."""

from __future__ import annotations

import html
from collections.abc import Collection
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd

from recall_dask import pl
from recall_dask.io.results import ResultKeys
from recall_dask.pl._axes import final_selected, iteration_trace
from recall_dask.report.figures import embedding_figure, plot_figure, png_data_uri

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def _image(figure: Figure, alt: str) -> str:
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


def _draws_table(trace: list[dict]) -> str:
    rows = []
    for number, it in enumerate(trace, start=1):
        clusters = " ".join("-" if k < 0 else str(k) for k in np.asarray(it["n_clusters"]).tolist())
        passed = int(it["n_passed"])
        stopped = int(it.get("n_stopped", passed))  # stores before draws ran R's loop each
        rows.append([number, f"{it['resolution']:.4g}", clusters, passed, stopped])
    header = ["iteration", "resolution", "clusters per draw", "draws passed", "draws stopped"]
    return _table(header, rows, numeric={0, 1, 3, 4})


def _calibration_section(
    adata: ad.AnnData, keys: ResultKeys, record: dict, trace: list[dict]
) -> list[str]:
    if "stability" not in record:
        return [
            '<p class="note">Each iteration clusters at a lower resolution while some pair of '
            "clusters selects no gene (the failing pair, marked in red).</p>",
            _image(
                plot_figure(pl.calibration, adata, keys), "clusters and resolution per iteration"
            ),
            _trace_table(trace),
        ]
    stability = record["stability"]
    needed = int(stability["needed"])
    return [
        f'<p class="note">{len(stability["draw_seeds"])} independent draws of the artificial '
        "genes, each with its own graph, each running R's loop on its own: a draw stops at the "
        "first resolution where every pair of its clusters selects a gene, and its clusters "
        f"there are its answer. The run takes the most clusters that at least {needed} draws' "
        "answers have, and the consensus of all answers around the medoid draw with that many: "
        "each cell takes the label most draws give it. Every pair of the consensus clusters is "
        f"then tested on every draw's own artificial genes and must select a gene in at least "
        f"{needed} of them; a pair that fails is merged.</p>",
        _image(plot_figure(pl.calibration, adata, keys), "clusters of every draw per iteration"),
        _draws_table(trace),
        _merges_note(stability),
    ]


def _merges_note(stability: dict) -> str:
    """The consensus pairs that too few draws told apart, and what became of them."""
    merges = stability.get("merges")  # stores before the consensus was tested
    if merges is None:
        return ""
    if len(merges["cells_a"]) == 0:
        return '<p class="note">No consensus pair needed merging.</p>'
    rows = [
        [f"{a:,} + {b:,} cells", f"{n} of {len(stability['draw_seeds'])}", into]
        for a, b, n, into in zip(
            merges["cells_a"],
            merges["cells_b"],
            merges["n_draws_selecting"],
            merges["merged_into"],
            strict=True,
        )
    ]
    return (
        '<p class="note">Consensus pairs merged because fewer than the needed draws selected a '
        "gene for them, in order; pairs with their final cluster passed only after merging "
        "(starred in the heatmap).</p>"
        + _table(["merged pair", "draws selecting", "final cluster"], rows, numeric={2})
    )


def _batches_section(adata: ad.AnnData, keys: ResultKeys, record: dict) -> list[str]:
    if "batches" not in record:
        return []
    batches = record["batches"]
    names = [str(name) for name in batches["names"]]
    composition = np.asarray(batches["composition"])
    mixing = np.asarray(batches["mixing"])
    largest = composition.argmax(axis=1)
    rows = [
        [str(c), f"{int(cells):,}", f"{mixing[c]:.2f}", html.escape(names[largest[c]])]
        for c, cells in enumerate(composition.sum(axis=1))
    ]
    return [
        '<div class="columns"><div><h2>Batches</h2>',
        f"<p class=\"note\">Each cell's batch (obs['{html.escape(keys.batch)}'], from "
        f"{html.escape(str(batches['key']))}). The null of every artificial gene was fitted "
        "within each batch and the PCs corrected by Harmony, so a split that only batch "
        "explains is not certified.</p>",
        _image(
            embedding_figure(adata, keys, {"batch": keys.batch}),
            "UMAP coloured by batch",
        ),
        "</div><div><h2>Batch composition</h2>",
        '<p class="note">Each cluster\'s share of cells per batch. Mixing: the entropy of the '
        "cluster's batches over that of all cells (1: as mixed as the data, 0: one batch); "
        "a cluster of one batch may be a type found there only.</p>",
        _image(plot_figure(pl.composition, adata, keys), "batch composition per cluster"),
        _table(["cluster", "cells", "mixing", "largest batch"], rows, numeric={1, 2}),
        "</div></div>",
    ]


def _stability_section(adata: ad.AnnData, keys: ResultKeys, record: dict) -> list[str]:
    if "stability" not in record:
        return []
    return [
        '<div class="columns"><div><h2>Stability</h2>',
        '<p class="note">A cell\'s confidence is the fraction of draws that give it its '
        f"cluster (obs['{html.escape(keys.confidence)}']); a cluster's stability is the mean "
        "confidence of its cells.</p>",
        _image(plot_figure(pl.stability, adata, keys), "stability of each cluster"),
        "</div><div>",
        _image(
            plot_figure(pl.confidence, adata, keys),
            "UMAP coloured by confidence",
        ),
        "</div></div>",
    ]


def _selection(record: dict, fdr: float) -> str:
    if record.get("method", "recall") == "countsplit":
        selection = f"genes with Bonferroni-adjusted p < {fdr:g} on the test half (count splitting)"
    else:
        selection = f"knockoff+ at q = {fdr:g}"
    if "stability" in record and "pair_n_selected" in record["stability"]:
        needed = int(record["stability"]["needed"])
        selection += f"; per pair, the most genes that at least {needed} draws each select"
    return selection


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


def render_report(
    adata: ad.AnnData, keys: ResultKeys, *, title: str, compare_default: bool = False
) -> str:
    """The report page of an AnnData holding a run's results and their UMAP under ``keys``."""
    record = adata.uns[keys.record]
    trace = iteration_trace(record)
    final = final_selected(record)
    labels, initial = adata.obs[keys.labels], adata.obs[keys.initial]
    panels = {"initial": keys.initial, "recall": keys.labels}
    if compare_default:
        panels["without recall"] = keys.default
    fdr = record["params"]["fdr"]
    summary = (
        f"{adata.n_obs:,} cells. The first clustering (resolution {trace[0]['resolution']:.4g}) "
        f"found {len(initial.cat.categories)} clusters; after "
        f"{len(trace)} iteration(s) recall keeps "
        f"{len(labels.cat.categories)} (resolution "
        f"{trace[-1]['resolution']:.4g})."
    )
    if compare_default:
        summary += (
            f" Without artificial genes the same resolution gives "
            f"{len(adata.obs[keys.default].cat.categories)} clusters."
        )
    parts = [
        f"<h1>recall report</h1><p>{html.escape(title)}</p><p>{html.escape(summary)}</p>",
        "<h2>UMAP</h2>",
        '<p class="note">UMAP of the first '
        f"{record['params']['dims']} PCs of the augmented data "
        f"(obsm['{html.escape(keys.graph_embedding(adata.obsm))}']). <b>initial</b>: the first "
        "clustering, "
        "before calibration; <b>recall</b>: the calibrated clusters"
        + (
            "; <b>without recall</b>: the standard clustering of the original data, no "
            "artificial genes, at the starting resolution"
            if compare_default
            else ""
        )
        + ".</p>",
        _image(embedding_figure(adata, keys, panels), "UMAP coloured by clusters"),
        *_batches_section(adata, keys, record),
        "<h2>Calibration</h2>",
        *_calibration_section(adata, keys, record, trace),
        *_stability_section(adata, keys, record),
        '<div class="columns"><div><h2>Genes selected per pair</h2>',
        f'<p class="note">Final clusters, {_selection(record, fdr)}.</p>',
        _image(plot_figure(pl.selected_genes, adata, keys), "genes selected per cluster pair"),
        "</div><div><h2>Cluster sizes</h2>",
        _image(plot_figure(pl.sizes, adata, keys), "cells per recall cluster"),
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
