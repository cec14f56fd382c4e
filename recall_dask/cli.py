"""``recall-dask``: parse options, build the configuration, call one function.

Only what the parser needs is imported up front, so that ``recall-dask --help`` and a bad
option answer at once; each command imports the pipeline when it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from recall_dask import __version__
from recall_dask.choices import DEFAULT_KEY, DEPTH_SD, LOG_MEAN
from recall_dask.cli_options import (
    COMPARE_DEFAULT,
    add_chunk_size,
    add_cluster_options,
    add_recall_options,
    add_report_options,
    add_storage_options,
)
from recall_dask.errors import CalibrationError, InputError
from recall_dask.params import RecallParams

if TYPE_CHECKING:
    from recall_dask.dask_cluster import ClusterConfig
    from recall_dask.io.checkpoints import NoCheckpoints

logger = logging.getLogger("recall_dask")
#: Draws of the demo: enough for one answer on PBMC 3k whatever the seed (docs/howto/draws.md).
DEMO_DRAWS = 10


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line as one line on stderr, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recall-dask",
        description="Knockoff-calibrated single-cell clustering (recall) on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser(
        "run",
        help="cluster a count matrix with calibrated resolution",
        description="Cluster cells of INPUT (Cell Ranger folder or .h5, .h5ad, AnnData .zarr) "
        "and write an AnnData Zarr store with the clusters in obs['recall'] (--key-added).",
    )
    run.add_argument("input", help="raw counts: Cell Ranger folder or .h5, .h5ad or .zarr")
    output = run.add_mutually_exclusive_group(required=True)
    output.add_argument("-o", "--out", help="output AnnData .zarr store (path or URL)")
    output.add_argument(
        "--in-place",
        action="store_true",
        help="write the results into INPUT, an AnnData .zarr store with CSR counts in X, "
        "instead of copying its counts to OUT (for data too large to copy)",
    )
    run.add_argument("--labels-csv", default=None, help="also write barcode,cluster to this CSV")
    run.add_argument(
        "--batches",
        default=None,
        metavar="CSV|barcode-suffix",
        help="each cell's batch for inputs without obs (Cell Ranger): a barcode,batch CSV naming "
        "every cell once, or barcode-suffix for the -N suffix that cellranger aggr appends; "
        "recorded under --batch-key (default batch)",
    )
    add_recall_options(run)
    add_report_options(run, None)
    add_cluster_options(run)
    demo = commands.add_parser(
        "demo",
        help="run on the bundled PBMC 3k data",
        description="Run recall on the bundled 10x PBMC 3k data (CC BY 4.0, 10x Genomics), "
        f"with {DEMO_DRAWS} draws of the artificial genes for one stable answer.",
    )
    demo.add_argument(
        "-o", "--out", default="recall_demo.zarr", help="output store (default %(default)s)"
    )
    demo.add_argument(
        "--labels-csv", default="recall_demo_labels.csv", help="labels CSV (default %(default)s)"
    )
    add_recall_options(demo)
    demo.set_defaults(draws=DEMO_DRAWS)
    add_report_options(demo, "recall_demo.html")
    add_cluster_options(demo)
    report = commands.add_parser(
        "report",
        help="write the HTML report of a run",
        description="Write one self-contained HTML page (UMAP, calibration trace, selected genes "
        "per cluster pair, cluster sizes, marker candidates, parameters) from a store that "
        "`run` wrote. Needs the report extra: pip install 'recall-dask[report]'. Adds the UMAP "
        "to the store (obsm['X_recall_umap'] for --key-added recall), and with "
        "--compare-default the standard clustering (obs['recall_default']); both are reused "
        "when present.",
    )
    report.add_argument("store", help="AnnData .zarr store written by `run` (path or URL)")
    report.add_argument(
        "-o", "--out", default=None, help="HTML file (default: STORE.zarr -> STORE.html)"
    )
    report.add_argument("--compare-default", action="store_true", help=COMPARE_DEFAULT)
    add_storage_options(report)
    add_cluster_options(report)
    ingest = commands.add_parser(
        "ingest",
        help="stream counts into a row-chunked AnnData Zarr store",
        description="Convert INPUT (Cell Ranger folder or .h5, .h5ad, AnnData .zarr) into an "
        "AnnData Zarr store with X as row-chunked CSR, chunk by chunk; `run` reads such a store.",
    )
    ingest.add_argument("input", help="raw counts: Cell Ranger folder or .h5, .h5ad or .zarr")
    ingest.add_argument(
        "-o", "--out", required=True, help="output AnnData .zarr store (path or URL)"
    )
    add_chunk_size(ingest)
    ingest.add_argument(
        "--layer", default=None, help="counts layer of an .h5ad/.zarr input (default: X)"
    )
    add_storage_options(ingest)
    simulate = commands.add_parser(
        "simulate",
        help="write simulated counts with known groups",
        description="Negative binomial counts with known groups, written chunk by chunk, for "
        "tests and benchmarks of any size: to an AnnData Zarr store with the true group in "
        "obs['group'], or, if OUT ends in .h5, to a Cell Ranger v3 HDF5 file. A 10x file holds "
        "no groups; its barcodes are cell0, cell1, ... and cell i is in group (i mod GROUPS) "
        "(recall_dask.simulate.group_labels).",
    )
    simulate.add_argument(
        "-o",
        "--out",
        required=True,
        help="output: an AnnData .zarr store, or a Cell Ranger .h5 file if it ends in .h5",
    )
    simulate.add_argument("--cells", type=int, required=True, help="number of cells")
    simulate.add_argument("--genes", type=int, required=True, help="number of genes")
    simulate.add_argument("--groups", type=int, required=True, help="number of true groups")
    simulate.add_argument(
        "--de-prob",
        type=float,
        default=0.1,
        help="fraction of genes differentially expressed per group (default %(default)s)",
    )
    simulate.add_argument(
        "--log-mean",
        type=float,
        default=LOG_MEAN,
        help="sequencing depth, as the mean of the genes' log base expression: the default "
        "gives about 1,000 of 20,000 genes per cell and 2,000 UMIs (10x v2-like); -2.3 gives "
        "about 4,900 genes and 30,000 UMIs (10x v3 depth) (default %(default)s)",
    )
    simulate.add_argument(
        "--depth-sd",
        type=float,
        default=DEPTH_SD,
        help="spread of the cells' sequencing depth: the sd of their log size factors; real "
        "data sit at 0.4 to 0.6 (default %(default)s)",
    )
    simulate.add_argument(
        "--batches",
        type=int,
        default=1,
        help="number of batches: cell i is in batch i mod BATCHES, written to obs['batch'] "
        "(default %(default)s)",
    )
    simulate.add_argument(
        "--batch-effect",
        type=float,
        default=0.1,
        help="fraction of genes that each batch changes, by fold changes drawn as the groups' "
        "(default %(default)s)",
    )
    simulate.add_argument(
        "--batch-depth",
        type=float,
        nargs="+",
        default=None,
        metavar="FACTOR",
        help="each batch's sequencing depth, one factor per batch (default: all 1)",
    )
    simulate.add_argument(
        "--absent",
        nargs="+",
        default=(),
        metavar="GROUP:BATCH",
        help="groups absent from batches, as GROUP:BATCH pairs (0-based); the batch's other "
        "groups take its cells",
    )
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    add_chunk_size(simulate)
    add_storage_options(simulate)
    for command in (run, demo, report):
        _add_key_option(command)
    for command in (run, demo, report, ingest, simulate):
        command.add_argument(
            "--quiet",
            action="store_true",
            help="print only warnings and errors: no stage lines, no progress bars",
        )
    return parser


def _add_key_option(parser: argparse.ArgumentParser) -> None:
    """``--key-added``: where a run's results go (read), as in :func:`recall_dask.api.recall`."""
    parser.add_argument(
        "--key-added",
        default=DEFAULT_KEY,
        help="name of the results in the store: obs[KEY] (clusters), obs[KEY_initial], "
        "obsm[X_KEY_pca], uns[KEY] (default %(default)s); a store written before this option "
        "is read under its old names",
    )


def _params(args: argparse.Namespace) -> RecallParams:
    """The RecallParams fields that the command line sets; the rest keep their defaults."""
    given = {f.name: getattr(args, f.name) for f in fields(RecallParams) if hasattr(args, f.name)}
    return RecallParams(**given)


def _run(args: argparse.Namespace, source: str | Path) -> None:
    from recall_dask import io
    from recall_dask.api import ingested, recall_store
    from recall_dask.config import get
    from recall_dask.dask_cluster import dask_client
    from recall_dask.io.results import ResultKeys
    from recall_dask.io.storage import Location
    from recall_dask.report import write_report

    params = _params(args)
    keys = ResultKeys.of(args.key_added)
    chunk_size = get("chunk-size") if args.chunk_size is None else args.chunk_size
    if chunk_size < 1:
        raise InputError(f"--chunk-size must be >= 1 (got {chunk_size})")
    if args.labels_csv and not Path(args.labels_csv).resolve().parent.is_dir():
        raise InputError(f"--labels-csv: directory of {args.labels_csv} does not exist")
    options = args.storage_options
    destination = _destination(args)
    in_place = getattr(args, "in_place", False)
    if in_place and args.layer is not None:
        raise InputError("--in-place reads the counts in X; --layer needs --out")
    report = _report_path(args)
    with ExitStack() as running:
        checkpoints = running.enter_context(_checkpoints(args, params, source))
        output = (
            nullcontext(source)
            if in_place
            else ingested(
                source,
                args.out,
                chunk_size=chunk_size,
                layer=args.layer,
                storage_options=options,
                checkpoints=checkpoints,
            )
        )
        with output as store:
            running.enter_context(dask_client(_cluster(args)))
            adata = recall_store(
                store,
                params,
                key_added=args.key_added,
                chunk_size=chunk_size,
                work_dir=args.work_dir,
                storage_options=options,
                checkpoints=checkpoints,
                batch_source=getattr(args, "batches", None),
            )
        labels = adata.obs[keys.labels]
        if args.labels_csv:
            io.write_labels_csv(args.labels_csv, adata.obs_names, labels.to_numpy())
        record = adata.uns[keys.record]
        logger.info(
            "%d clusters after %d iteration(s) (resolution %.4g); wrote %s%s",
            record["n_clusters"],
            record["n_iterations"],
            record["resolution"],
            Location.of(destination, options),
            f" and {Path(args.labels_csv).resolve()}" if args.labels_csv else "",
        )
        if report is not None:  # after the store is complete: a failed report leaves it
            write_report(
                store,
                report,
                key_added=args.key_added,
                compare_default=args.compare_default,
                storage_options=options,
            )


def _checkpoints(
    args: argparse.Namespace, params: RecallParams, source: str | Path
) -> AbstractContextManager[NoCheckpoints]:
    """The run's checkpoints in its work store under ``--work-dir`` (docs/howto/resume.md),
    or none without ``--work-dir``."""
    from recall_dask.io.checkpoints import NO_CHECKPOINTS, checkpoint_store
    from recall_dask.io.fingerprint import run_fingerprint

    if args.work_dir is None:
        if args.resume or args.keep_work:
            raise InputError("--resume and --keep-work need --work-dir")
        return nullcontext(NO_CHECKPOINTS)
    options = args.storage_options
    run_options = {**params.as_dict(), "layer": args.layer, "batches": _batch_source(args)}
    fingerprint = run_fingerprint(source, run_options, options)
    return checkpoint_store(
        args.work_dir,
        _destination(args),
        fingerprint,
        resume=args.resume,
        keep=args.keep_work,
        storage_options=options,
    )


def _batch_source(args: argparse.Namespace) -> str | None:
    """What ``--batches`` names, with a CSV's contents hashed: a resumed run must take the
    same batches."""
    import hashlib

    from recall_dask.io.batches import BARCODE_SUFFIX

    source = getattr(args, "batches", None)
    if source is None or source == BARCODE_SUFFIX or not Path(source).is_file():
        return source
    return f"{source} (sha256 {hashlib.sha256(Path(source).read_bytes()).hexdigest()})"


def _cluster(args: argparse.Namespace) -> ClusterConfig:
    from recall_dask.dask_cluster import ClusterConfig

    return ClusterConfig(**{f.name: getattr(args, f.name) for f in fields(ClusterConfig)})


def _report_path(args: argparse.Namespace) -> str | None:
    """Where ``run`` or ``demo`` writes the report, or None; checked before the run starts.

    Without the report extra, ``demo`` skips its default report with a note, so that it runs
    after a plain ``pip install``; an asked-for report is an error.
    """
    from recall_dask.report import report_path_for, require_extra

    if args.report is None and not args.compare_default:
        return None
    try:
        require_extra()
    except InputError as error:
        if args.command != "demo":
            raise
        logger.warning("no report: %s", error)
        return None
    return args.report or report_path_for(_destination(args))


def _destination(args: argparse.Namespace) -> str:
    """Where ``run`` writes its results: the input store itself with --in-place, else --out."""
    return args.input if getattr(args, "in_place", False) else args.out


def _report(args: argparse.Namespace) -> None:
    """Write the report of an existing store; a cluster only for the standard clustering."""
    from recall_dask.dask_cluster import dask_client
    from recall_dask.report import require_extra, write_report

    require_extra()
    with dask_client(_cluster(args)) if args.compare_default else nullcontext():
        write_report(
            args.store,
            args.out,
            key_added=args.key_added,
            compare_default=args.compare_default,
            storage_options=args.storage_options,
        )


def _ingest(args: argparse.Namespace) -> None:
    from recall_dask import io
    from recall_dask.io.storage import Location

    options = args.storage_options
    io.ingest(
        args.input, args.out, chunk_size=args.chunk_size, layer=args.layer, storage_options=options
    )
    logger.info("wrote %s", Location.of(args.out, options))


def _simulate(args: argparse.Namespace) -> None:
    from recall_dask.io.storage import Location
    from recall_dask.simulate import write_simulated

    write_simulated(
        args.out,
        args.cells,
        args.genes,
        args.groups,
        de_prob=args.de_prob,
        seed=args.seed,
        log_mean=args.log_mean,
        depth_sd=args.depth_sd,
        batches=args.batches,
        batch_effect=args.batch_effect,
        batch_depth=args.batch_depth,
        composition=_composition(args),
        chunk_size=args.chunk_size,
        storage_options=args.storage_options,
    )
    logger.info("wrote %s", Location.of(args.out, args.storage_options))


def _composition(args: argparse.Namespace) -> list[list[float]] | None:
    """Equal weights of every group in every batch, but 0 for the ``--absent`` pairs."""
    if not args.absent:
        return None
    weights = [[1.0] * args.groups for _ in range(args.batches)]
    for pair in args.absent:
        group, _, batch = pair.partition(":")
        try:
            weights[int(batch)][int(group)] = 0.0
        except (ValueError, IndexError):
            raise InputError(
                f"--absent {pair}: expected GROUP:BATCH with GROUP < {args.groups} and "
                f"BATCH < {args.batches}"
            ) from None
    return weights


def _demo(args: argparse.Namespace) -> None:
    from recall_dask.io import BUNDLED_PBMC3K

    _run(args, BUNDLED_PBMC3K)


_COMMANDS = {
    "run": lambda args: _run(args, args.input),
    "demo": _demo,
    "report": _report,
    "ingest": _ingest,
    "simulate": _simulate,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``recall-dask`` with ``argv`` (default: the process's arguments) and return its exit
    status: 0, 1 when calibration gave up, 2 for bad input (one line on stderr)."""
    args = _parser().parse_args(argv)
    from recall_dask.progress import reporting

    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    warnings.simplefilter("default", UserWarning)
    try:
        with reporting(not args.quiet):
            _COMMANDS[args.command](args)
    except InputError as error:
        print(f"recall-dask: error: {error}", file=sys.stderr)
        return 2
    except CalibrationError as error:
        print(f"recall-dask: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
