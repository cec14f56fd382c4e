"""The resolution loop of ``FindClustersRecall``: recluster until every cluster pair is real.

At each resolution the graph is clustered and every pair of clusters is tested by a pair test:
a function of the labels that returns the clusters x clusters matrix of genes selected per
pair (and marker candidates, where it has them). recall's test
(:func:`recall_dask.methods.recall.selected_gene_counts`) runs the knockoff filter on the
variable genes and their artificial twins; count splitting's
(:mod:`recall_dask.methods.countsplit`) counts marker genes on held-out counts, as
``FindClustersCountsplit`` does with the same loop. A pair that selects no gene is not
supported by the data, so the resolution drops by ``reduction_percentage`` and the same graph
is clustered again. The loop stops when every pair selects a gene or one cluster is left.

Each clustering starts its own random stream (Seurat's ``random.seed = 0``), so the clustering
at a resolution does not depend on the ones before it. The next resolutions are therefore
clustered ahead, on other cores, while the current one is tested; a clustering that turns out
not to be needed is abandoned at its next random start. Results are the same as one at a time,
and the same when a resumed run takes the finished resolutions from its checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields

import numpy as np
import scipy.sparse as sp

from recall_dask import config
from recall_dask.errors import CalibrationError
from recall_dask.graph import SNNGraph, cluster_graph
from recall_dask.io.checkpoints import NO_CHECKPOINTS, NoCheckpoints
from recall_dask.methods.recall import Markers
from recall_dask.params import RecallParams

logger = logging.getLogger(__name__)


def clustering_threads() -> int:
    """Clusterings run at once in the client, the current resolution and the next ones: the
    ``recall.clustering-threads`` knob, by default (null) one per core, at most four."""
    threads = config.get("clustering-threads")
    return max(1, min(4, os.cpu_count() or 1)) if threads is None else threads


def _resolutions_ahead(threads: int) -> int:
    """Resolutions clustered beyond the current one: one per thread but the current one's, and
    at least one, which runs while the current clustering's pairs are tested. More would take
    cores from the pair tests on a local cluster, and every one is wasted when the current
    clustering is accepted."""
    return max(1, threads - 1)


#: Labels (one cluster id per cell, ``0..K-1``) to the K x K matrix of genes selected per pair
#: (-1 on the diagonal) and, for tests that have them, each pair's marker candidates.
PairTest = Callable[[np.ndarray], tuple[np.ndarray, "Markers | None"]]


@dataclass(frozen=True)
class Iteration:
    """One clustering and its pairwise knockoff tests."""

    resolution: float
    labels: np.ndarray = field(repr=False)
    n_selected: np.ndarray  # clusters x clusters selected-gene counts; -1 on the diagonal
    markers: Markers | None = field(default=None, repr=False)

    @property
    def n_clusters(self) -> int:
        return self.n_selected.shape[0]

    @property
    def n_pairs(self) -> int:
        return self.n_clusters * (self.n_clusters - 1) // 2

    @property
    def failing_pair(self) -> tuple[int, int] | None:
        """The first pair in R's loop order ((1, 0), (2, 0), (2, 1), ...) that selects nothing."""
        later, earlier = np.nonzero(np.tril(self.n_selected == 0, k=-1))
        return (int(earlier[0]), int(later[0])) if later.size else None

    def arrays(self) -> dict[str, np.ndarray]:
        """The clustering and its tests as named arrays, exactly (a checkpoint of the loop)."""
        arrays = {"labels": self.labels, "n_selected": self.n_selected}
        if self.markers is not None:
            arrays |= {f"markers.{f.name}": getattr(self.markers, f.name) for f in fields(Markers)}
        return arrays

    @classmethod
    def from_arrays(cls, resolution: float, arrays: dict[str, np.ndarray]) -> Iteration:
        """The iteration at ``resolution`` that :meth:`arrays` gave."""
        markers = None
        if "markers.gene" in arrays:
            markers = Markers(**{f.name: arrays[f"markers.{f.name}"] for f in fields(Markers)})
        return cls(resolution, arrays["labels"], arrays["n_selected"], markers)

    def summary(self) -> dict[str, object]:
        pair = self.failing_pair
        return {
            "resolution": self.resolution,
            "n_clusters": self.n_clusters,
            "n_pairs_tested": self.n_pairs,
            "failing_pair": list(pair) if pair else [],
            "n_selected": self.n_selected,
        }


def resolutions(params: RecallParams) -> list[float]:
    """The resolutions the loop may try, each ``reduction_percentage`` below the one before."""
    values = [params.resolution_start]
    for _ in range(params.max_iterations - 1):
        values.append(values[-1] * (1 - params.reduction_percentage))
    return values


@dataclass(frozen=True)
class Step:
    """One resolution of the loop: every draw's clustering and pair tests, and the verdict.

    A draw passes when every pair of its clusters selects a gene. It has **stopped** once it
    passed here or at a higher resolution: R's procedure on that draw alone would have ended
    there. The resolution is accepted when at least ``needed`` draws have stopped, so the
    answer is where the draws' own R runs end, taken at their median (at the default
    agreement); with one draw, R's rule.
    """

    resolution: float
    draws: tuple[Iteration, ...]
    needed: int
    stopped_before: np.ndarray | None = field(default=None, repr=False)

    @property
    def passed(self) -> np.ndarray:
        return np.array([draw.failing_pair is None for draw in self.draws])

    @property
    def stopped(self) -> np.ndarray:
        """Draws that passed at this resolution or at a higher one."""
        before = self.stopped_before
        return self.passed if before is None else self.passed | before

    @property
    def accepted(self) -> bool:
        return int(self.stopped.sum()) >= self.needed


def draws_needed(n_draws: int, agreement: float) -> int:
    """Passing draws that accept a resolution: at least ``agreement`` of ``n_draws`` (exactly
    half of an even number is enough at 1/2)."""
    return max(1, math.ceil(agreement * n_draws - 1e-9))


def calibrate(snn: sp.csr_matrix, pair_test: PairTest, params: RecallParams) -> list[Iteration]:
    """Lower the resolution until every cluster pair selects a gene; the last iteration wins.

    ``pair_test`` is called once per clustering, with its labels. One draw of
    :func:`calibrate_draws`.
    """
    return [step.draws[0] for step in calibrate_draws([snn], [pair_test], params)]


def calibrate_draws(
    graphs: Sequence[sp.csr_matrix | SNNGraph],
    pair_tests: Sequence[PairTest],
    params: RecallParams,
    checkpoints: NoCheckpoints = NO_CHECKPOINTS,
) -> list[Step]:
    """Lower the resolution until at least a fraction ``params.agreement`` of the draws have
    passed, here or at a higher resolution; the last step wins.

    Draw m clusters its own SNN graph ``graphs[m]`` and tests its clusters with
    ``pair_tests[m]``, once per resolution. The draws' clusterings run on the clustering
    threads, the current resolution first and the next ones ahead; their pair tests run at
    the same time, each on its own thread. Each draw's iteration at each resolution is a
    checkpoint (``iteration-<number>-<draw>``): finished ones are taken from ``checkpoints``,
    neither clustered nor tested again.
    """
    graphs = [SNNGraph.from_snn(snn) for snn in graphs]
    threads = clustering_threads()
    needed = draws_needed(len(graphs), params.agreement)
    steps = resolutions(params)
    stop = threading.Event()
    clusterings: dict[tuple[int, int], Future] = {}
    done: list[Step] = []
    with (
        ThreadPoolExecutor(threads, thread_name_prefix="clustering") as pool,
        ThreadPoolExecutor(len(graphs), thread_name_prefix="pair-tests") as testing,
    ):
        try:
            for number, resolution in enumerate(steps):
                finished = [
                    _finished(checkpoints, number, m, resolution) for m in range(len(graphs))
                ]
                for ahead in range(
                    number, min(number + 1 + _resolutions_ahead(threads), len(steps))
                ):
                    for draw, graph in enumerate(graphs):
                        if (ahead, draw) not in clusterings and finished[draw] is None:
                            # Seurat's FindClusters keeps random.seed = 0 whatever the seed.
                            clusterings[ahead, draw] = pool.submit(
                                cluster_graph,
                                graph,
                                steps[ahead],
                                algorithm=params.algorithm,
                                seed=0,
                                stop=stop,
                            )
                current = [
                    clusterings.pop((number, m)) if earlier is None else earlier
                    for m, earlier in enumerate(finished)
                ]
                iterations = _test_draws(
                    number, resolution, current, pair_tests, testing, checkpoints
                )
                stopped = done[-1].stopped if done else None
                step = Step(resolution, iterations, needed, stopped)
                done.append(step)
                _log(len(done), step)
                if step.accepted:
                    _warn_if_first(done)
                    return done
        finally:
            stop.set()
            pool.shutdown(cancel_futures=True)
    clusters = " ".join(str(draw.n_clusters) for draw in done[-1].draws)
    raise CalibrationError(
        f"no calibrated clustering after {params.max_iterations} iterations "
        f"(last resolution {done[-1].resolution:.4g}, {clusters} clusters); raise "
        "--max-iterations or --reduction-percentage"
    )


def _finished(
    checkpoints: NoCheckpoints, number: int, draw: int, resolution: float
) -> Iteration | None:
    """A draw's iteration at this resolution, if an earlier run finished it."""
    arrays = checkpoints.load(_checkpoint_name(number, draw))
    return None if arrays is None else Iteration.from_arrays(resolution, arrays)


def _checkpoint_name(number: int, draw: int) -> str:
    return f"iteration-{number}-{draw}"


def _test_draws(
    number: int,
    resolution: float,
    clusterings: list[Future | Iteration],
    pair_tests: Sequence[PairTest],
    pool: ThreadPoolExecutor,
    checkpoints: NoCheckpoints,
) -> tuple[Iteration, ...]:
    """Every draw's pair tests, each as soon as its clustering is done, so the workers test
    some draws while the client still clusters others; an iteration already finished stays as
    it is, a new one is saved in ``checkpoints``. The first draw's run in this thread (with its
    progress bar), the others on threads, whose bars would only garble it."""

    def test(draw: int) -> Iteration:
        clustering = clusterings[draw]
        if isinstance(clustering, Iteration):
            return clustering
        labels = clustering.result()
        iteration = Iteration(resolution, labels, *pair_tests[draw](labels))
        checkpoints.save(_checkpoint_name(number, draw), iteration.arrays())
        return iteration

    others = [pool.submit(test, draw) for draw in range(1, len(clusterings))]
    return (test(0), *(future.result() for future in others))


def _warn_if_first(steps: list[Step]) -> None:
    if len(steps) == 1:
        warnings.warn(
            f"the starting resolution {steps[0].resolution} was accepted after a single "
            "iteration: the clusters may be under-clustered; consider a higher "
            "--resolution-start",
            stacklevel=3,
        )


def _log(number: int, step: Step) -> None:
    if len(step.draws) > 1:
        logger.info(
            "iteration %d: resolution %.4g, clusters per draw %s; %d of %d draws passed so "
            "far (%d needed): %s",
            number,
            step.resolution,
            " ".join(str(draw.n_clusters) for draw in step.draws),
            int(step.stopped.sum()),
            len(step.draws),
            step.needed,
            "done" if step.accepted else "lowering the resolution",
        )
        return
    (iteration,) = step.draws
    pair = iteration.failing_pair
    verdict = (
        f"pair {pair} selected 0 genes: lowering the resolution"
        if pair
        else "every pair selected genes: done"
        if iteration.n_clusters > 1
        else "one cluster: done"
    )
    logger.info(
        "iteration %d: resolution %.4g, %d clusters, %d pairs tested; %s",
        number,
        iteration.resolution,
        iteration.n_clusters,
        iteration.n_pairs,
        verdict,
    )
