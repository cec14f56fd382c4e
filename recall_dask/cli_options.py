"""The option groups that the ``recall-dask`` subcommands share: recall's parameters (their
defaults from :class:`~recall_dask.params.RecallParams`), where to run, storage options and
the report. :mod:`recall_dask.cli` adds them to each subcommand's parser."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from recall_dask import config
from recall_dask.choices import CLUSTER_KINDS
from recall_dask.params import RecallParams, flag


def add_recall_options(parser: argparse.ArgumentParser) -> None:
    """recall's parameters (``run`` and ``demo``), generated from the metadata of
    :class:`~recall_dask.params.RecallParams`' fields, and how the counts are read and where
    the work store goes."""
    for spec in fields(RecallParams):
        meta = spec.metadata
        if meta["help"] is None:
            continue
        kind = str if spec.default is None else type(spec.default)
        typed = {"choices": meta["choices"]} if meta["choices"] else {"type": kind}
        parser.add_argument(
            flag(spec.name),
            default=spec.default,
            help=f"{meta['help']} (default {meta['shown']})",
            **typed,
        )
    add_chunk_size(parser)
    add = parser.add_argument
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


def add_chunk_size(parser: argparse.ArgumentParser) -> None:
    """``--chunk-size``; left out, the ``recall.chunk-size`` knob of dask config decides."""
    shipped = config.shipped()["recall"]["chunk-size"]
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help=f"cells per row chunk (default {shipped}, from dask config recall.chunk-size)",
    )


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
