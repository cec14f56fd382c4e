"""The option groups that the ``recall-dask`` subcommands share: recall's parameters (their
defaults from :class:`~recall_dask.params.RecallParams`), where to run, storage options and
the report. :mod:`recall_dask.cli` adds them to each subcommand's parser."""

from __future__ import annotations

import argparse
import json

from recall_dask import io
from recall_dask.dask_cluster import CLUSTER_KINDS
from recall_dask.graph import ALGORITHMS, NEIGHBOR_SEARCHES
from recall_dask.methods import METHODS
from recall_dask.nulls import NULL_METHODS
from recall_dask.params import RecallParams

DEFAULTS = RecallParams()


def add_recall_options(parser: argparse.ArgumentParser) -> None:
    """recall's parameters (``run`` and ``demo``), with RecallParams' defaults, and how the
    counts are read and where the work store goes."""
    d = DEFAULTS
    add = parser.add_argument
    add(
        "--method",
        choices=tuple(METHODS),
        default=d.method,
        help="how cluster pairs are tested: recall = artificial null genes and the knockoff "
        "filter (FindClustersRecall); countsplit = split the counts into train and test halves, "
        "cluster the train half and test marker genes on the test half with Seurat's "
        "FindMarkers defaults (FindClustersCountsplit) (default %(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=d.seed,
        help="random seed of the artificial genes or of the count split (default %(default)s)",
    )
    add(
        "--draws",
        type=int,
        default=d.draws,
        help="independent draws of the artificial genes (countsplit: count splits); above 1, "
        "a resolution is accepted when at least --agreement of the draws pass, and the "
        "clusters are the draws' consensus, with each cell's confidence; 1 is the R "
        "package's single draw (default %(default)s)",
    )
    add(
        "--agreement",
        type=float,
        default=d.agreement,
        help="fraction of the draws that must pass to accept a resolution, in (0, 1] "
        "(default %(default)s)",
    )
    add(
        "--resolution-start",
        type=float,
        default=d.resolution_start,
        help="first clustering resolution (default %(default)s)",
    )
    add(
        "--reduction-percentage",
        type=float,
        default=d.reduction_percentage,
        help="fraction by which the resolution drops per iteration (default %(default)s)",
    )
    add("--dims", type=int, default=d.dims, help="PCs used for the kNN graph (default %(default)s)")
    add(
        "--n-hvg",
        type=int,
        default=d.n_hvg,
        help="number of variable genes; recall gives each an artificial twin, countsplit "
        "chooses them on the train half (default %(default)s)",
    )
    add(
        "--algorithm",
        choices=ALGORITHMS,
        default=d.algorithm,
        help="modularity clustering (default %(default)s)",
    )
    add(
        "--null-method",
        choices=NULL_METHODS,
        default=d.null_method,
        help="null distribution of the artificial genes; recall only (default %(default)s)",
    )
    add(
        "--fdr",
        type=float,
        default=d.fdr,
        help="knockoff+ target FDR q; with countsplit, the level of the Bonferroni-adjusted "
        "marker p-values (default %(default)s)",
    )
    add(
        "--n-pcs",
        type=int,
        default=d.n_pcs,
        help="principal components computed, as Seurat's RunPCA (default %(default)s)",
    )
    add(
        "--k-neighbors",
        type=int,
        default=d.k_neighbors,
        help="neighbors per cell in the kNN graph, as Seurat's FindNeighbors k.param "
        "(default %(default)s)",
    )
    add(
        "--neighbors",
        choices=tuple(NEIGHBOR_SEARCHES),
        default=d.neighbors,
        help="neighbor search: annoy = Seurat's FindNeighbors default (Annoy, 50 trees, the "
        "same neighbors as Seurat for the same embedding); exact = an exact KD-tree search "
        "(default %(default)s)",
    )
    add(
        "--snn-prune",
        type=float,
        default=d.snn_prune,
        help="drop shared-neighbor edges with Jaccard overlap at or below this, as Seurat's "
        "prune.SNN (default 1/15)",
    )
    add(
        "--max-iterations",
        type=int,
        default=d.max_iterations,
        help="give up after this many resolutions (default %(default)s)",
    )
    add(
        "--chunk-size",
        type=int,
        default=io.DEFAULT_CHUNK_SIZE,
        help="cells per row chunk (default %(default)s)",
    )
    add("--layer", default=None, help="counts layer of an .h5ad/.zarr input (default: X)")
    add(
        "--work-dir",
        default=None,
        help="directory or URL (s3://...) for the temporary work store of the normalized "
        "matrices; "
        "on a cluster, one every worker can reach (default: the system's temporary directory); "
        "given, it also keeps each finished stage there, for --resume",
    )
    add(
        "--resume",
        action="store_true",
        help="continue the run that the same command left in --work-dir, reusing its finished "
        "stages (same input and options, or exit 2)",
    )
    add(
        "--keep-work",
        action="store_true",
        help="keep the work store in --work-dir after a successful run (default: removed)",
    )
    add_storage_options(parser)


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Where to run: an existing scheduler, or the kind and shape of a new Dask cluster."""
    where = parser.add_argument_group(
        "where to run",
        "An existing scheduler (--scheduler or DASK_SCHEDULER_ADDRESS; tls:// addresses use "
        "dask's distributed.comm.tls config), else a new cluster of the --cluster kind, shut "
        "down at the end. SLURM and Kubernetes options left out come from dask config "
        "(jobqueue.slurm.* as in jobqueue.yaml, kubernetes.*).",
    )
    add = where.add_argument
    add(
        "--scheduler",
        default=None,
        help="address of an existing Dask scheduler (default: DASK_SCHEDULER_ADDRESS)",
    )
    add(
        "--cluster",
        dest="kind",
        choices=CLUSTER_KINDS,
        default="local",
        help="kind of new cluster (default %(default)s)",
    )
    add(
        "--n-workers",
        type=int,
        default=2,
        help="local worker processes or Kubernetes worker pods (default %(default)s)",
    )
    add(
        "--threads-per-worker",
        type=int,
        default=None,
        help="threads per local worker (default: cores / workers)",
    )
    add("--memory-limit", default="auto", help="memory per local worker, e.g. 4GiB (default auto)")
    add("--jobs", type=int, default=1, help="SLURM worker jobs (default %(default)s)")
    add("--queue", default=None, help="SLURM partition")
    add("--account", default=None, help="SLURM account")
    add("--walltime", default=None, help="SLURM job time limit, e.g. 02:00:00")
    add("--cores", type=int, default=None, help="cores per SLURM job")
    add("--memory", default=None, help="memory per SLURM job, e.g. 16GiB")
    add("--image", default=None, help="container image of the Kubernetes scheduler and workers")


def add_storage_options(parser: argparse.ArgumentParser) -> None:
    """``--storage-options``: fsspec options, as JSON, for every URL of the command."""
    parser.add_argument(
        "--storage-options",
        type=_json_object,
        default=None,
        help="fsspec storage options for every URL, as JSON, e.g. "
        '\'{"endpoint_url": "http://minio:9000"}\' (default: fsspec configuration and the '
        "environment)",
    )


def add_report_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    """Whether and where to write the HTML report after a run (``default``: the demo's)."""
    report = parser.add_argument_group("report")
    report.add_argument(
        "--report",
        nargs="?",
        const="",
        default=default,
        metavar="PATH",
        help="also write the HTML report, to PATH or beside the output (OUT.zarr -> OUT.html)"
        + (" (default %(default)s)" if default else ""),
    )
    if default:
        report.add_argument(
            "--no-report", dest="report", action="store_const", const=None, help="no report"
        )
    report.add_argument(
        "--compare-default", action="store_true", help=COMPARE_DEFAULT + " (implies --report)"
    )


COMPARE_DEFAULT = (
    "add to the report the standard clustering of the original data (no artificial genes) at "
    "the starting resolution, as a third UMAP panel"
)


def _json_object(text: str) -> dict:
    """A JSON object given on the command line, or an argparse error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value
