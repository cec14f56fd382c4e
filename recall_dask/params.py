"""The options of a recall run, resolved once and validated at the edge.

Each field of :class:`RecallParams` describes its option once, in its metadata (see
:func:`option`): the help text, the accepted values and the rule they break. The command line
(:func:`recall_dask.cli_options.add_recall_options`) is generated from it, and validation
names the same flag, so a bad value reads alike from the shell and from Python.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

from recall_dask.choices import (
    ALGORITHMS,
    BATCH_TESTS,
    DEPTHS,
    METHODS,
    NEIGHBOR_SEARCHES,
    NULL_METHODS,
    NULLS_WITHOUT_OVERDISPERSION,
    SPLITS,
)
from recall_dask.errors import InputError


def option(
    default: Any,
    help: str | None = None,
    *,
    choices: tuple[str, ...] | None = None,
    valid: Callable[[Any], bool] | None = None,
    rule: str = "",
    shown: str = "%(default)s",
) -> Any:
    """A :class:`RecallParams` field with its option's metadata: ``help`` (``None``: not on
    the command line), either the ``choices`` it accepts or a ``valid`` predicate and the
    ``rule`` a failing value breaks ("must be >= 1"), and ``shown``, the default as the help
    prints it."""
    metadata = {"help": help, "choices": choices, "valid": valid, "rule": rule, "shown": shown}
    return field(default=default, metadata=metadata)


#: Nulls that split a population of varying depth when fitted blind to depth (--depth none).
_DEPTH_BLIND_MISSES = ("zip", "nb", "nb-copula", "gaussian-copula")


def flag(name: str) -> str:
    """The command-line flag of the field ``name``: ``n_hvg`` -> ``--n-hvg``."""
    return "--" + name.replace("_", "-")


def _positive_integer(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class RecallParams:
    """Options of ``FindClustersRecall`` and the Seurat defaults it relies on.

    Defaults mirror the R package (2,000 variable genes, resolution 0.8 lowered by 20% per
    iteration, 10 PCs for the graph, Annoy neighbors as Seurat's ``FindNeighbors``, Louvain,
    knockoff+ at q = 0.05), except where measured to be wrong: the artificial genes are
    negative binomial and carry each cell's depth (R: ZIP, ``depth="none"``), and count
    splitting splits by the negative binomial and tests within depth strata (R: Poisson,
    ``depth="none"``); see ``benchmarks/calibration.py``. ``method`` "countsplit" runs
    ``FindClustersCountsplit`` instead; ``null_method`` does not apply to it, and ``fdr`` is
    then the level of its Bonferroni-adjusted p-values (R: 0.05).

    ``draws`` M > 1 runs M independent draws of the artificial genes (or M count splits), each
    running R's loop on its own; the number of clusters is the most that at least a fraction
    ``agreement`` of the draws' answers have, the labels are their consensus, and every pair
    of consensus clusters must select a gene in at least that fraction of the draws (else it
    is merged). M = 1 is the R package's procedure. The fields are in the order of
    ``recall-dask run --help``.
    """

    method: str = option(
        "recall",
        "how cluster pairs are tested: recall = artificial null genes and the knockoff filter "
        "(FindClustersRecall); countsplit = split the counts into train and test halves, "
        "cluster the train half and test marker genes on the test half with Seurat's "
        "FindMarkers defaults (FindClustersCountsplit)",
        choices=METHODS,
    )
    seed: int = option(
        0,
        "random seed of the artificial genes or of the count split",
        valid=lambda v: v >= 0,
        rule="must be >= 0",
    )
    draws: int = option(
        1,
        "independent draws of the artificial genes (countsplit: count splits), each running "
        "the R package's loop on its own; above 1, the clusters are the consensus of the "
        "draws' answers, with each cell's confidence; 1 is the R package's single draw",
        valid=_positive_integer,
        rule="must be a positive integer",
    )
    agreement: float = option(
        0.5,
        "fraction of the draws whose answers must have the run's number of clusters (the "
        "median of their counts at 1/2), and that must select a gene for every pair of the "
        "consensus clusters (a pair that fails is merged), in (0, 1]",
        valid=lambda v: 0 < v <= 1,
        rule="must be in (0, 1]",
    )
    resolution_start: float = option(
        0.8, "first clustering resolution", valid=lambda v: v > 0, rule="must be > 0"
    )
    reduction_percentage: float = option(
        0.2,
        "fraction by which the resolution drops per iteration",
        valid=lambda v: 0 < v < 1,
        rule="must be in (0, 1)",
    )
    dims: int = option(
        10, "PCs used for the kNN graph", valid=lambda v: v >= 1, rule="must be >= 1"
    )
    n_hvg: int = option(
        2000,
        "number of variable genes; recall gives each an artificial twin, countsplit chooses "
        "them on the train half",
        valid=lambda v: v >= 2,
        rule="must be >= 2",
    )
    algorithm: str = option("louvain", "modularity clustering", choices=ALGORITHMS)
    louvain_starts: int = option(
        10,
        "random starts of each clustering, the best kept, as Seurat's FindClusters n.start",
        valid=_positive_integer,
        rule="must be a positive integer",
    )
    louvain_iterations: int = option(
        10,
        "most passes of each random start, as Seurat's FindClusters n.iter",
        valid=_positive_integer,
        rule="must be a positive integer",
    )
    null_method: str = option(
        "nb",
        "null distribution of the artificial genes: each gene's counts, fitted with each cell's "
        "depth under --depth cell; zip is the R package's default; recall only",
        choices=NULL_METHODS,
    )
    depth: str = option(
        "cell",
        "how calibration accounts for each cell's sequencing depth: cell = recall draws each "
        "cell's artificial genes with its depth, as its real genes carry it, and countsplit "
        "compares clusters within 20 groups of like depth; none = as the R package, which "
        "ignores depth and so can certify clusters that depth alone explains",
        choices=DEPTHS,
    )
    batch_key: str | None = option(
        None,
        "obs column of each cell's batch (sample, donor, lane, plate): variable genes chosen "
        "across batches, each batch's own null, the PCs corrected by Harmony and, with "
        "--batch-test within, pair tests within batches; a difference that batch alone "
        "explains is then not certified",
        valid=lambda v: v is None or (isinstance(v, str) and v != ""),
        rule="must name an obs column",
        shown="none",
    )
    batch_test: str = option(
        "pooled",
        "with --batch-key, how a pair of clusters is tested: pooled = over all cells, each "
        "cell's twin drawn from its batch's null; within = van Elteren's test within batches",
        choices=BATCH_TESTS,
    )
    split: str = option(
        "nb",
        "how countsplit splits each count: nb = the Dirichlet-multinomial split, with each "
        "gene's overdispersion fitted to the counts, which makes the halves independent for "
        "negative binomial (UMI) counts; poisson = the binomial split of the R package, whose "
        "halves share the overdispersion of such counts; countsplit only",
        choices=SPLITS,
    )
    fdr: float = option(
        0.05,
        "knockoff+ target FDR q; with countsplit, the level of the Bonferroni-adjusted marker "
        "p-values",
        valid=lambda v: 0 < v < 1,
        rule="must be in (0, 1)",
    )
    n_pcs: int = option(50, "principal components computed, as Seurat's RunPCA")
    k_neighbors: int = option(
        20,
        "neighbors per cell in the kNN graph, as Seurat's FindNeighbors k.param",
        valid=lambda v: v >= 2,
        rule="must be >= 2",
    )
    neighbors: str = option(
        "annoy",
        "neighbor search: annoy = Seurat's FindNeighbors default (Annoy, 50 trees, the same "
        "neighbors as Seurat for the same embedding); exact = an exact KD-tree search",
        choices=NEIGHBOR_SEARCHES,
    )
    snn_prune: float = option(
        1 / 15,
        "drop shared-neighbor edges with Jaccard overlap at or below this, as Seurat's prune.SNN",
        valid=lambda v: 0 <= v < 1,
        rule="must be in [0, 1)",
        shown="1/15",
    )
    max_iterations: int = option(
        50,
        "give up after this many resolutions",
        valid=lambda v: v >= 1,
        rule="must be >= 1",
    )
    target_sum: float = option(1e4)
    scale_max: float = option(10.0)

    def __post_init__(self) -> None:
        problem = next(self._problems(), None)
        if problem is not None:
            raise InputError(problem)

    def _problems(self) -> Iterator[str]:
        """What is wrong with the options, each as the message that names its flag."""
        for spec in dataclasses.fields(self):
            value, meta = getattr(self, spec.name), spec.metadata
            if meta["choices"] is not None and value not in meta["choices"]:
                allowed = ", ".join(meta["choices"])
                yield f"{flag(spec.name)} must be one of {allowed} (got {value})"
            elif meta["valid"] is not None and not meta["valid"](value):
                yield f"{flag(spec.name)} {meta['rule']} (got {value})"
        if self.n_pcs < self.dims:
            yield f"--dims must not exceed the number of PCs (got {self.dims})"

    def misses(self) -> Iterator[str]:
        """What ``benchmarks/calibration.py`` measured to go wrong with these options, each as
        the warning a run gives (docs/explanation/depth.md)."""
        if self.method == "countsplit":
            yield (
                "--method countsplit: both halves of a cell share its depth, so a population "
                "whose depth varies as in real data is split and the split confirmed (at a "
                "depth sd of 0.6, 8 of 20 seeds with --split nb --depth cell, 20 of 20 with "
                "the R package's split); prefer --method recall"
            )
            return
        if self.depth == "none" and self.null_method in _DEPTH_BLIND_MISSES:
            yield (
                f"--depth none with --null-method {self.null_method}: the artificial genes "
                "ignore each cell's depth, as the R package's, so a population whose depth "
                "varies as in real data is split by depth and the split certified; use "
                "--depth cell"
            )
        if self.null_method == "gaussian-copula":
            yield (
                "--null-method gaussian-copula: a continuous null of counts does not "
                "reproduce their zeros, so a population whose depth varies is split and the "
                "split certified, with or without --depth cell; use --null-method nb"
            )
        elif self.null_method in NULLS_WITHOUT_OVERDISPERSION:
            yield (
                f"--null-method {self.null_method}: its counts have no overdispersion, so the "
                "twins of highly expressed genes are more regular than the genes, and on "
                "dense data (hundreds of counts per gene) real groups can fail at every "
                "resolution; use --null-method nb"
            )

    def as_dict(self) -> dict[str, object]:
        """Every option by name: ``uns['recall']['params']``, and the run's fingerprint."""
        return dataclasses.asdict(self)
