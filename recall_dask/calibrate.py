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
With several draws (``--draws``) each draw runs this loop on its own graph, independently of
the others, and the run's answer is taken from the draws' answers (:func:`agreed_draws`).

Every clustering is a task (:mod:`recall_dask.tasks`): on a worker, next to the draw's graph,
or on the client's threads without a distributed client; the client receives its labels and
tests their pairs. Each clustering starts its own random stream (Seurat's
``random.seed = 0``), so the clustering at a resolution does not depend on the ones before
it. The next resolutions are therefore clustered ahead, on spare slots, while the current one
is tested; a clustering that turns out not to be needed is abandoned at its next random
start. With several draws, the draws' own clusterings fill the slots instead, and fewer
resolutions (or none) are clustered ahead. Results are the same as one at a time, wherever
the tasks run, and the same when a resumed run takes the finished resolutions from its
checkpoints.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

import distributed
import numpy as np
import scipy.sparse as sp

from recall_dask._testhook import kill_point
from recall_dask.errors import CalibrationError
from recall_dask.graph import SNNGraph, cluster_graph, graph_components, order_by_size
from recall_dask.io.checkpoints import NO_CHECKPOINTS, NoCheckpoints
from recall_dask.methods.draws import PairTest
from recall_dask.params import RecallParams
from recall_dask.stats.markers import Markers
from recall_dask.tasks import ClientThreads, Tasks, clustering_threads, where_running

logger = logging.getLogger(__name__)


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
        """The iteration as R's trace of the loop records it (``uns['recall']['iterations']``)."""
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
    graphs: Sequence[sp.csr_matrix | SNNGraph | Any],
    pair_tests: Sequence[PairTest],
    params: RecallParams,
    checkpoints: NoCheckpoints = NO_CHECKPOINTS,
    tasks: Tasks | None = None,
) -> list[Step]:
    """Lower the resolution until every draw has stopped: each draw runs R's loop on its own,
    and :func:`draw_answers` gives their answers.

    Draw m clusters its own SNN graph ``graphs[m]`` (a graph, or a future of one on the
    workers) and tests its clusters with ``pair_tests[m]``, once per resolution. Every
    clustering is a task of ``tasks`` (by default on the client's threads,
    :func:`~recall_dask.tasks.clustering_threads`); the draws advance independently, each
    testing its pairs as soon as its own clustering is done. Each draw's iteration at each
    resolution is a checkpoint (``iteration-<number>-<draw>``): finished ones are taken from
    ``checkpoints``, neither clustered nor tested again.
    """
    own = tasks is None
    tasks = ClientThreads(clustering_threads()) if own else tasks
    graphs = [graph if _is_future(graph) else SNNGraph.from_snn(graph) for graph in graphs]
    running = _Running(len(graphs))
    loops = [
        functools.partial(_draw_loop, m, graph, test, params, checkpoints, tasks, running)
        for m, (graph, test) in enumerate(zip(graphs, pair_tests, strict=True))
    ]
    try:
        if len(loops) == 1:
            per_draw = [loops[0]()]
        else:
            with ThreadPoolExecutor(len(loops), thread_name_prefix="draw-loop") as pool:
                per_draw = list(pool.map(lambda loop: loop(), loops))
    finally:
        running.abort.set()
        if own:
            tasks.close()
    steps = _steps(per_draw, resolutions(params))
    for number, step in enumerate(steps if len(graphs) > 1 else (), start=1):
        _log_step(step, number)
    _warn_if_first(steps)
    return steps


class _Running:
    """How many draws are still in the loop (the look-ahead shares the slots among them), and
    the signal that ends every draw's loop when one fails."""

    def __init__(self, n_draws: int) -> None:
        self._count, self._lock = n_draws, threading.Lock()
        self.abort = threading.Event()

    @property
    def count(self) -> int:
        with self._lock:
            return max(1, self._count)

    def stopped(self) -> None:
        with self._lock:
            self._count -= 1


def _draw_loop(
    m: int,
    graph: Any,
    pair_test: PairTest,
    params: RecallParams,
    checkpoints: NoCheckpoints,
    tasks: Tasks,
    running: _Running,
) -> list[Iteration]:
    """R's loop on draw m: cluster at each resolution (and the next ones ahead, on spare
    slots), test the pairs, stop at the first clustering whose every pair selects a gene."""
    steps = resolutions(params)
    stop = tasks.stop_signal()
    clusterings: dict[int, Any] = {}
    components = functools.cache(
        lambda: tasks.submit("recall-graph-components", graph_components, graph).result()
    )
    iterations: list[Iteration] = []
    try:
        for number, resolution in enumerate(steps):
            if running.abort.is_set():
                raise CalibrationError("stopped: another draw's loop failed")
            iteration = _finished(checkpoints, number, m, resolution)
            where = "the work store"
            if iteration is None:
                last = number + 1 + _resolutions_ahead(tasks.slots, running.count)
                for ahead in range(number, min(last, len(steps))):
                    if ahead not in clusterings:
                        clusterings[ahead] = tasks.submit(
                            f"recall-cluster-draw{m}-iteration{ahead}",
                            clustered,
                            graph,
                            steps[ahead],
                            algorithm=params.algorithm,
                            n_starts=params.louvain_starts,
                            n_iterations=params.louvain_iterations,
                            stop=stop,
                        )
                labels, where = clusterings.pop(number).result()
                iteration = Iteration(resolution, labels, *pair_test(labels))
                iteration = _joined(iteration, components, pair_test)
                checkpoints.save(_checkpoint_name(number, m), iteration.arrays())
            iterations.append(iteration)
            _log(m, number + 1, iteration, where, several=params.draws > 1)
            if iteration.failing_pair is None:
                return iterations
    finally:
        stop.set()  # a draw that stopped is not clustered again
        for future in clusterings.values():
            future.cancel()
        running.stopped()
    raise CalibrationError(
        f"no calibrated clustering after {params.max_iterations} iterations "
        f"(last resolution {iterations[-1].resolution:.4g}, {iterations[-1].n_clusters} "
        "clusters); raise --max-iterations or --reduction-percentage"
    )


def clustered(
    graph: SNNGraph | Any,
    resolution: float,
    *,
    algorithm: str,
    n_starts: int,
    n_iterations: int,
    stop: Any,
) -> tuple[np.ndarray, str]:
    """One clustering task: the labels at ``resolution`` and where they were computed.
    Seurat's ``FindClusters`` keeps ``random.seed = 0`` whatever the run's seed."""
    kill_point("clustering")
    labels = cluster_graph(
        graph,
        resolution,
        algorithm=algorithm,
        seed=0,
        n_starts=n_starts,
        n_iterations=n_iterations,
        stop=stop,
    )
    return labels, where_running()


def _is_future(value: Any) -> bool:
    return isinstance(value, Future | distributed.Future)


def _steps(per_draw: Sequence[Sequence[Iteration]], values: Sequence[float]) -> list[Step]:
    """The draws' iterations by resolution: at each, every draw still running, and which had
    stopped before."""
    steps: list[Step] = []
    stopped = np.zeros(len(per_draw), dtype=bool)
    for number in range(max(len(iterations) for iterations in per_draw)):
        draws = tuple(its[number] if number < len(its) else None for its in per_draw)
        step = Step(values[number], draws, stopped)
        steps.append(step)
        stopped = step.stopped
    return steps


def _finished(
    checkpoints: NoCheckpoints, number: int, draw: int, resolution: float
) -> Iteration | None:
    """A draw's iteration at this resolution, if an earlier run finished it."""
    arrays = checkpoints.load(_checkpoint_name(number, draw))
    return None if arrays is None else Iteration.from_arrays(resolution, arrays)


def _checkpoint_name(number: int, draw: int) -> str:
    return f"iteration-{number}-{draw}"


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


def _log(draw: int, number: int, iteration: Iteration, where: str, several: bool) -> None:
    """A draw's iteration as it ends: its clusters, its verdict and where it was clustered."""
    pair = iteration.failing_pair
    verdict = (
        f"pair {pair} selected 0 genes: lowering the resolution"
        if pair
        else "every pair selected genes: done"
        if iteration.n_clusters > 1
        else "one cluster: done"
    )
    logger.info(
        "%siteration %d: resolution %.4g, %d clusters, %d pairs tested; %s (clustered on %s)",
        f"draw {draw}, " if several else "",
        number,
        iteration.resolution,
        iteration.n_clusters,
        iteration.n_pairs,
        verdict,
        where,
    )


def _log_step(step: Step, number: int) -> None:
    """The draws at one resolution, once every draw has stopped."""
    logger.info(
        "iteration %d: resolution %.4g, clusters per draw %s; %d of %d draws stopped",
        number,
        step.resolution,
        " ".join("-" if draw is None else str(draw.n_clusters) for draw in step.draws),
        int(step.stopped.sum()),
        len(step.draws),
    )
