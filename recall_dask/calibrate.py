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
With several draws (``--draws``) each draw runs this loop on its own graph, all at the same
resolution until it stops, and the run's answer is taken from the draws' answers
(:func:`agreed_draws`).

Each clustering starts its own random stream (Seurat's ``random.seed = 0``), so the clustering
at a resolution does not depend on the ones before it. The next resolutions are therefore
clustered ahead, on other cores, while the current one is tested; a clustering that turns out
not to be needed is abandoned at its next random start. With several draws, the draws' own
clusterings keep the cores busy instead, and fewer resolutions (or none) are clustered ahead.
Results are the same as one at a time, and the same when a resumed run takes the finished
resolutions from its checkpoints.
"""

from __future__ import annotations

import functools
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
from recall_dask.graph import SNNGraph, cluster_graph, graph_components, order_by_size
from recall_dask.io.checkpoints import NO_CHECKPOINTS, NoCheckpoints
from recall_dask.methods.draws import PairTest
from recall_dask.params import RecallParams
from recall_dask.stats.markers import Markers

logger = logging.getLogger(__name__)


def clustering_threads() -> int:
    """Clusterings run at once in the client, the current resolution and the next ones: the
    ``recall.clustering-threads`` knob, by default (null) one per core, at most four."""
    threads = config.get("clustering-threads")
    return max(1, min(4, os.cpu_count() or 1)) if threads is None else threads


def _resolutions_ahead(threads: int, running: int) -> int:
    """Resolutions clustered beyond the current one, for each of ``running`` draws: the spare
    threads (all but the current clustering's, and at least one, which runs while the current
    clustering's pairs are tested), shared among the draws. Several draws' clusterings at the
    current resolution already keep the threads busy, so with as many draws as spare threads
    none is clustered ahead: a draw that stops wastes every clustering made ahead for it, and
    on a local cluster they would take cores from the pair tests."""
    return max(1, threads - 1) // running


@dataclass(frozen=True)
class Iteration:
    """One clustering and its pairwise knockoff tests."""

    resolution: float
    labels: np.ndarray = field(repr=False)
    n_selected: np.ndarray  # clusters x clusters selected-gene counts; -1 on the diagonal
    markers: Markers | None = field(default=None, repr=False)
    joined: int = 0  # pairs merged because no resolution could join them

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
        if self.joined:
            arrays["joined"] = np.array(self.joined)
        if self.markers is not None:
            arrays |= {f"markers.{f.name}": getattr(self.markers, f.name) for f in fields(Markers)}
        return arrays

    @classmethod
    def from_arrays(cls, resolution: float, arrays: dict[str, np.ndarray]) -> Iteration:
        """The iteration at ``resolution`` that :meth:`arrays` gave."""
        markers = None
        if "markers.gene" in arrays:
            markers = Markers(**{f.name: arrays[f"markers.{f.name}"] for f in fields(Markers)})
        joined = int(arrays["joined"]) if "joined" in arrays else 0
        return cls(resolution, arrays["labels"], arrays["n_selected"], markers, joined)

    def summary(self) -> dict[str, object]:
        pair = self.failing_pair
        summary = {
            "resolution": self.resolution,
            "n_clusters": self.n_clusters,
            "n_pairs_tested": self.n_pairs,
            "failing_pair": list(pair) if pair else [],
            "n_selected": self.n_selected,
        }
        return summary | ({"joined": self.joined} if self.joined else {})


def resolutions(params: RecallParams) -> list[float]:
    """The resolutions the loop may try, each ``reduction_percentage`` below the one before."""
    values = [params.resolution_start]
    for _ in range(params.max_iterations - 1):
        values.append(values[-1] * (1 - params.reduction_percentage))
    return values


@dataclass(frozen=True)
class Step:
    """One resolution of the loop: the clustering and pair tests of every draw still running.

    A draw passes when every pair of its clusters selects a gene. R's procedure on that draw
    alone ends there, so the draw has **stopped**: its answer is that clustering, and at lower
    resolutions it is not clustered again (``None`` in ``draws``). The loop ends when every
    draw has stopped; with one draw this is R's loop.
    """

    resolution: float
    draws: tuple[Iteration | None, ...]
    stopped_before: np.ndarray | None = field(default=None, repr=False)

    @property
    def passed(self) -> np.ndarray:
        return np.array([d is not None and d.failing_pair is None for d in self.draws])

    @property
    def stopped(self) -> np.ndarray:
        """Draws that passed at this resolution or at a higher one."""
        before = self.stopped_before
        return self.passed if before is None else self.passed | before

    @property
    def finished(self) -> bool:
        return bool(self.stopped.all())


def draws_needed(n_draws: int, agreement: float) -> int:
    """Draws that must reach an answer's number of clusters: at least ``agreement`` of
    ``n_draws`` (exactly half of an even number is enough at 1/2)."""
    return max(1, math.ceil(agreement * n_draws - 1e-9))


def draw_answers(steps: Sequence[Step]) -> list[Iteration]:
    """Each draw's own answer: its clustering where it stopped, as R's procedure on that draw
    alone would end."""
    answers: list[Iteration | None] = [None] * len(steps[0].draws)
    for step in steps:
        for m, (iteration, passed) in enumerate(zip(step.draws, step.passed, strict=True)):
            if passed and answers[m] is None:
                answers[m] = iteration
    if any(answer is None for answer in answers):
        raise ValueError("every draw must have stopped")
    return answers


def agreed_draws(answers: Sequence[Iteration], agreement: float) -> list[int]:
    """The draws whose answer has the run's number of clusters: the most clusters that at
    least a fraction ``agreement`` of the draws' answers have (their median at 1/2). A run
    over-splits only if that many draws' own answers do."""
    counts = np.array([answer.n_clusters for answer in answers])
    chosen = np.sort(counts)[::-1][draws_needed(len(answers), agreement) - 1]
    return np.flatnonzero(counts == chosen).tolist()


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
    """Lower the resolution until every draw has stopped: each draw runs R's loop on its own,
    and :func:`draw_answers` gives their answers.

    Draw m clusters its own SNN graph ``graphs[m]`` and tests its clusters with
    ``pair_tests[m]``, once per resolution. The draws' clusterings run on the clustering
    threads, the current resolution first and the next ones ahead; their pair tests run at
    the same time, each on its own thread. Each draw's iteration at each resolution is a
    checkpoint (``iteration-<number>-<draw>``): finished ones are taken from ``checkpoints``,
    neither clustered nor tested again.
    """
    graphs = [SNNGraph.from_snn(snn) for snn in graphs]
    components = [functools.cache(functools.partial(graph_components, graph)) for graph in graphs]
    threads = clustering_threads()
    steps = resolutions(params)
    stops = [threading.Event() for _ in graphs]  # a stopped draw's clusterings end early
    clusterings: dict[tuple[int, int], Future] = {}
    done: list[Step] = []
    with (
        ThreadPoolExecutor(threads, thread_name_prefix="clustering") as pool,
        ThreadPoolExecutor(len(graphs), thread_name_prefix="pair-tests") as testing,
    ):
        try:
            for number, resolution in enumerate(steps):
                stopped = done[-1].stopped if done else np.zeros(len(graphs), dtype=bool)
                running = np.flatnonzero(~stopped)
                finished = {m: _finished(checkpoints, number, m, resolution) for m in running}
                last = number + 1 + _resolutions_ahead(threads, running.size)
                for ahead in range(number, min(last, len(steps))):
                    for draw in running:
                        if (ahead, draw) not in clusterings and finished[draw] is None:
                            # Seurat's FindClusters keeps random.seed = 0 whatever the seed.
                            clusterings[ahead, draw] = pool.submit(
                                cluster_graph,
                                graphs[draw],
                                steps[ahead],
                                algorithm=params.algorithm,
                                seed=0,
                                stop=stops[draw],
                            )
                current = [
                    None
                    if stopped[m]
                    else finished[m]
                    if finished[m] is not None
                    else clusterings.pop((number, m))
                    for m in range(len(graphs))
                ]
                iterations = _test_draws(
                    number, resolution, current, pair_tests, components, testing, checkpoints
                )
                step = Step(resolution, iterations, stopped)
                done.append(step)
                _log(len(done), step)
                if step.finished:
                    _warn_if_first(done)
                    return done
                for draw in np.flatnonzero(step.stopped & ~stopped):
                    stops[draw].set()  # a draw that stopped is not clustered again
                for key in [key for key in clusterings if step.stopped[key[1]]]:
                    clusterings.pop(key).cancel()
        finally:
            for stop in stops:
                stop.set()
            pool.shutdown(cancel_futures=True)
    clusters = " ".join(str(draw.n_clusters) for draw in done[-1].draws if draw is not None)
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
    clusterings: list[Future | Iteration | None],
    pair_tests: Sequence[PairTest],
    components: Sequence[Callable[[], np.ndarray]],
    pool: ThreadPoolExecutor,
    checkpoints: NoCheckpoints,
) -> tuple[Iteration | None, ...]:
    """The pair tests of every running draw, each as soon as its clustering is done, so the
    workers test some draws while the client still clusters others; an iteration already
    finished stays as it is, a new one is saved in ``checkpoints``, a stopped draw (``None``)
    stays out. Failing pairs that no resolution can join are merged (:func:`_joined`). The
    first running draw's run in this thread (with its progress bar), the others on threads,
    whose bars would only garble it."""

    def test(draw: int) -> Iteration | None:
        clustering = clusterings[draw]
        if clustering is None or isinstance(clustering, Iteration):
            return clustering
        labels = clustering.result()
        iteration = Iteration(resolution, labels, *pair_tests[draw](labels))
        iteration = _joined(iteration, components[draw], pair_tests[draw])
        checkpoints.save(_checkpoint_name(number, draw), iteration.arrays())
        return iteration

    running = [draw for draw, clustering in enumerate(clusterings) if clustering is not None]
    others = {draw: pool.submit(test, draw) for draw in running[1:]}
    first = {running[0]: test(running[0])}
    return tuple(
        first[d] if d in first else others[d].result() if d in others else None
        for d in range(len(clusterings))
    )


def _joined(
    iteration: Iteration, components: Callable[[], np.ndarray], pair_test: PairTest
) -> Iteration:
    """The iteration with its failing pairs that no resolution can join merged, the pair of
    fewest cells first, and tested again.

    Louvain and Leiden never put two parts of the graph that share no edge in one community,
    so a pair whose clusters are each made of whole connected components of the graph is the
    same pair at every lower resolution, fails at each, and R's loop runs out of iterations
    there. Such a pair is merged directly, as the consensus of ``--draws`` merges its failing
    pairs; other failing pairs are left to the lower resolutions.
    """
    while iteration.failing_pair is not None:
        pair = _apart_failing_pair(iteration, components())
        if pair is None:
            return iteration
        a, b = pair
        sizes = np.bincount(iteration.labels)
        logger.info(
            "resolution %.4g: clusters %d (%d cells) and %d (%d cells) share no edge of the "
            "neighbor graph and select no gene: merged",
            iteration.resolution,
            a,
            sizes[a],
            b,
            sizes[b],
        )
        labels = order_by_size(np.where(iteration.labels == b, a, iteration.labels))
        tests = pair_test(labels)
        iteration = Iteration(iteration.resolution, labels, *tests, joined=iteration.joined + 1)
    return iteration


def _apart_failing_pair(iteration: Iteration, components: np.ndarray) -> tuple[int, int] | None:
    """The failing pair of fewest cells whose two clusters are each whole components of the
    graph, or None."""
    labels = iteration.labels
    touching = np.zeros((iteration.n_clusters, int(components.max()) + 1), dtype=bool)
    touching[labels, components] = True
    shared = touching[:, touching.sum(axis=0) > 1]  # components split between clusters
    whole = ~shared.any(axis=1)
    later, earlier = np.nonzero(np.tril(iteration.n_selected == 0, k=-1))
    apart = whole[earlier] & whole[later]
    if not apart.any():
        return None
    sizes = np.bincount(labels)
    cells = sizes[earlier[apart]] + sizes[later[apart]]
    first = np.argmin(cells)
    return int(earlier[apart][first]), int(later[apart][first])


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
            "iteration %d: resolution %.4g, clusters per draw %s; %d of %d draws stopped%s",
            number,
            step.resolution,
            " ".join("-" if draw is None else str(draw.n_clusters) for draw in step.draws),
            int(step.stopped.sum()),
            len(step.draws),
            "" if step.finished else ": lowering the resolution for the others",
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
