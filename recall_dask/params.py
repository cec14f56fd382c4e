"""The options of a recall run, resolved once and validated at the edge."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from numbers import Integral

from recall_dask.errors import InputError
from recall_dask.graph import ALGORITHMS, NEIGHBOR_SEARCHES
from recall_dask.methods import METHODS
from recall_dask.nulls import NULL_METHODS


@dataclass(frozen=True)
class RecallParams:
    """Options of ``FindClustersRecall`` and the Seurat defaults it relies on.

    Defaults mirror the R package: ZIP null, 2,000 variable genes, resolution 0.8 lowered by
    20% per iteration, 10 PCs for the graph, Annoy neighbors as Seurat's ``FindNeighbors``,
    Louvain, knockoff+ at q = 0.05. ``method`` "countsplit" runs ``FindClustersCountsplit``
    instead; ``null_method`` does not apply to it, and ``fdr`` is then the level of its
    Bonferroni-adjusted p-values (R: 0.05).

    ``draws`` M > 1 runs M independent draws of the artificial genes (or M count splits) and
    accepts a resolution when at least a fraction ``agreement`` of them pass; M = 1 is the R
    package's procedure.
    """

    method: str = "recall"
    resolution_start: float = 0.8
    reduction_percentage: float = 0.2
    dims: int = 10
    n_hvg: int = 2000
    algorithm: str = "louvain"
    null_method: str = "zip"
    fdr: float = 0.05
    max_iterations: int = 50
    seed: int = 0
    n_pcs: int = 50
    k_neighbors: int = 20
    neighbors: str = "annoy"
    draws: int = 1
    agreement: float = 0.5
    snn_prune: float = 1 / 15
    target_sum: float = 1e4
    scale_max: float = 10.0

    def __post_init__(self) -> None:
        checks = [
            (self.method in METHODS, f"--method must be one of {', '.join(METHODS)}"),
            (self.resolution_start > 0, "--resolution-start must be > 0"),
            (0 < self.reduction_percentage < 1, "--reduction-percentage must be in (0, 1)"),
            (self.dims >= 1, "--dims must be >= 1"),
            (self.n_pcs >= self.dims, "--dims must not exceed the number of PCs"),
            (self.n_hvg >= 2, "--n-hvg must be >= 2"),
            (self.algorithm in ALGORITHMS, f"--algorithm must be one of {', '.join(ALGORITHMS)}"),
            (
                self.null_method in NULL_METHODS,
                f"--null-method must be one of {', '.join(NULL_METHODS)}",
            ),
            (0 < self.fdr < 1, "--fdr must be in (0, 1)"),
            (self.max_iterations >= 1, "--max-iterations must be >= 1"),
            (self.seed >= 0, "--seed must be >= 0"),
            (
                isinstance(self.draws, Integral)
                and not isinstance(self.draws, bool)
                and self.draws >= 1,
                "--draws must be a positive integer",
            ),
            (0 < self.agreement <= 1, "--agreement must be in (0, 1]"),
            (self.k_neighbors >= 2, "--k-neighbors must be >= 2"),
            (
                self.neighbors in NEIGHBOR_SEARCHES,
                f"--neighbors must be one of {', '.join(NEIGHBOR_SEARCHES)}",
            ),
            (0 <= self.snn_prune < 1, "--snn-prune must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"{message} (got {self._value_for(message)})")

    def _value_for(self, message: str) -> object:
        option = message.split()[0].lstrip("-").replace("-", "_")
        return getattr(self, option, "?")

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)
