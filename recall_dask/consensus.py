"""One answer from many draws: a consensus of the draws' partitions, and how stable it is.

With ``--draws M`` every draw of the artificial genes (or every count split) ends R's loop
with its own clusters, and two draws agree only in part. The consensus takes the medoid draw
(the one that agrees best, by mean adjusted Rand index, with the others; the run picks it
among the draws that found the run's number of clusters), matches every other draw's clusters
to the medoid's by largest overlap, and gives each cell the label most draws give it, ties
going to the medoid. A cell's confidence is the fraction of draws that give it its consensus
label; a cluster's stability is the mean confidence of its cells; a pair of clusters is
separate in a draw when the draw puts most of their cells in different clusters of its own.

A majority vote over draws is a partition that no draw produced, so recall's promise (every
pair of final clusters is told apart by some gene that beats its artificial twin) is checked
again on it (:func:`calibrated_consensus`): every pair of consensus clusters is tested on every
draw's own matrix, and a pair passes when at least the draws needed (``--agreement`` of them,
the rule that chose the number of clusters) select a gene for it. While a pair fails, the
weakest pair is merged and the clusters are tested again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from recall_dask.methods.draws import PairTest

logger = logging.getLogger(__name__)


def contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cells shared by cluster i of ``a`` and cluster j of ``b`` (labels ``0..K-1``)."""
    table = np.zeros((int(a.max()) + 1, int(b.max()) + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    return table


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Hubert and Arabie's adjusted Rand index of two partitions (1 for identical ones)."""
    table = contingency(a, b)

    def pairs(x: np.ndarray) -> float:
        x = x.astype(np.float64)
        return float(np.sum(x * (x - 1) / 2))

    n_pairs = a.size * (a.size - 1) / 2
    index, rows, cols = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = rows * cols / n_pairs if n_pairs else 0.0
    maximum = (rows + cols) / 2
    if maximum == expected:  # both partitions trivial (one cluster, or all singletons)
        return 1.0
    return (index - expected) / (maximum - expected)


def medoid(partitions: Sequence[np.ndarray], among: Sequence[int] | None = None) -> int:
    """The partition with the highest mean ARI to the others (the first on ties), of those
    listed in ``among`` (default: all)."""
    m = len(partitions)
    among = list(range(m)) if among is None else list(among)
    if len(among) == 1:
        return among[0]
    agreement = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            agreement[i, j] = agreement[j, i] = adjusted_rand_index(partitions[i], partitions[j])
    return among[int(np.argmax(agreement[among].sum(axis=1)))]


def matched(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``labels`` renamed into ``reference``'s clusters: each cluster takes the name of the
    reference cluster it shares most cells with (the lowest on ties)."""
    return np.argmax(contingency(labels, reference), axis=1)[labels]


@dataclass(frozen=True)
class Consensus:
    """The consensus partition of M draws and its stability.

    ``labels`` are ``0..K-1`` by decreasing size; ``confidence[c]`` is the fraction of draws
    that give cell c its label; ``cluster_stability[k]`` the mean confidence of cluster k's
    cells; ``pair_separation[a, b]`` the fraction of draws in which clusters a and b are
    separate (0 on the diagonal); ``medoid`` the index of the medoid draw; ``votes`` (draws x
    cells) the label each draw's matched cluster gives each cell (-1: a cluster the consensus
    lost).
    """

    labels: np.ndarray
    medoid: int
    confidence: np.ndarray
    cluster_stability: np.ndarray
    pair_separation: np.ndarray
    votes: np.ndarray = field(repr=False)

    def merged(self, a: int, b: int, partitions: Sequence[np.ndarray]) -> Consensus:
        """The consensus with clusters ``a`` and ``b`` as one: a draw's vote for either now
        counts for both; relabelled by size, with stability recomputed."""
        from recall_dask.graph import order_by_size

        joined = np.where(self.labels == b, a, self.labels)
        labels = order_by_size(joined)
        renamed = np.full(self.labels.max() + 1, -1)
        renamed[joined] = labels
        votes = np.where(self.votes == b, a, self.votes)
        votes = np.where(votes >= 0, renamed[votes], -1)
        return _with_stability(labels, self.medoid, votes, partitions)


def consensus(partitions: Sequence[np.ndarray], among: Sequence[int] | None = None) -> Consensus:
    """The medoid's clusters, each cell taking the label most draws give it (see module); the
    medoid is one of the partitions listed in ``among`` (default: any)."""
    from recall_dask.graph import order_by_size

    partitions = [np.asarray(p, dtype=np.int64) for p in partitions]
    centre = medoid(partitions, among)
    reference = partitions[centre]
    votes = np.stack([matched(p, reference) for p in partitions])  # draws x cells
    n_labels = int(reference.max()) + 1
    counts = np.zeros((reference.size, n_labels), dtype=np.int64)
    for draw in votes:
        counts[np.arange(reference.size), draw] += 1
    # Twice the votes plus one for the medoid's own label: ties go to the medoid.
    score = 2 * counts
    score[np.arange(reference.size), reference] += 1
    chosen = np.argmax(score, axis=1)
    labels = order_by_size(chosen)
    renamed = np.full(n_labels, -1)  # medoid clusters that no cell chose vote for none
    renamed[chosen] = labels
    return _with_stability(labels, centre, renamed[votes], partitions)


def _with_stability(
    labels: np.ndarray, centre: int, votes: np.ndarray, partitions: Sequence[np.ndarray]
) -> Consensus:
    """The consensus ``labels`` with each cell's confidence (the fraction of ``votes`` for its
    label), each cluster's stability and each pair's separation over ``partitions``."""
    confidence = (votes == labels).mean(axis=0)
    n_clusters = int(labels.max()) + 1
    stability = np.bincount(labels, weights=confidence) / np.bincount(labels)
    separate = np.zeros((n_clusters, n_clusters))
    for partition in partitions:
        dominant = np.argmax(contingency(labels, partition), axis=1)
        separate += dominant[:, None] != dominant[None, :]
    return Consensus(labels, centre, confidence, stability, separate / len(partitions), votes)


@dataclass(frozen=True)
class Merge:
    """Two consensus clusters merged because too few draws told them apart: their sizes,
    the draws that selected a gene for them, and a cell of theirs (to find them afterwards)."""

    cells_a: int
    cells_b: int
    n_draws_selecting: int
    cell: int


@dataclass(frozen=True)
class CalibratedConsensus:
    """A consensus every pair of which passed the draws' pair tests: the consensus, each
    draw's test of its clusters (genes selected per pair, markers), the merges on the way and
    the draws each pair needed."""

    consensus: Consensus
    tests: list[tuple[np.ndarray, Any]]
    merges: list[Merge]
    needed: int

    @property
    def n_selected(self) -> np.ndarray:
        """Genes selected per pair, draws x clusters x clusters (-1 on the diagonals)."""
        return np.stack([selected for selected, _ in self.tests])

    @property
    def agreed_n_selected(self) -> np.ndarray:
        """Per pair, the most genes that at least ``needed`` draws each select: at least 1
        for every pair of a tested consensus (-1 on the diagonal)."""
        return np.sort(self.n_selected, axis=0)[::-1][self.needed - 1]

    @property
    def pair_support(self) -> np.ndarray:
        """The fraction of draws that select a gene for each pair (-1 on the diagonal)."""
        support = (self.n_selected > 0).mean(axis=0)
        np.fill_diagonal(support, -1.0)
        return support

    def merged_into(self) -> np.ndarray:
        """The final cluster that each merge went into."""
        labels = self.consensus.labels
        return np.array([labels[merge.cell] for merge in self.merges], dtype=np.int64)

    def record(self) -> dict[str, np.ndarray]:
        """The merges as parallel arrays, for ``uns['recall']['stability']['merges']``."""
        return {
            "cells_a": np.array([m.cells_a for m in self.merges], dtype=np.int64),
            "cells_b": np.array([m.cells_b for m in self.merges], dtype=np.int64),
            "n_draws_selecting": np.array([m.n_draws_selecting for m in self.merges], np.int64),
            "merged_into": self.merged_into(),
        }


def calibrated_consensus(
    agreed: Consensus,
    partitions: Sequence[np.ndarray],
    pair_tests: Sequence[PairTest],
    needed: int,
) -> CalibratedConsensus:
    """Test every pair of the consensus clusters with every draw's own pair test, all draws at
    once; while some pair is selected by fewer than ``needed`` draws, merge the weakest (the
    fewest draws selecting a gene, then the fewest genes over all draws, then the fewest
    cells) and test again. One cluster left passes."""
    merges: list[Merge] = []
    with ThreadPoolExecutor(len(pair_tests), thread_name_prefix="consensus-tests") as pool:
        while True:
            running = [pool.submit(test, agreed.labels) for test in pair_tests]
            tests = [test.result() for test in running]
            selected = np.stack([n_selected for n_selected, _ in tests])
            weakest = _weakest_failing_pair(selected, agreed.labels, needed)
            if weakest is None:
                calibrated = CalibratedConsensus(agreed, tests, merges, needed)
                _log_passed(calibrated)
                return calibrated
            a, b = weakest
            sizes = np.bincount(agreed.labels)
            merge = Merge(
                int(sizes[a]),
                int(sizes[b]),
                int((selected[:, a, b] > 0).sum()),
                int(np.argmax(agreed.labels == a)),
            )
            logger.info(
                "consensus: clusters %d (%d cells) and %d (%d cells) select genes in %d of %d "
                "draws, fewer than the %d needed: merged",
                a,
                merge.cells_a,
                b,
                merge.cells_b,
                merge.n_draws_selecting,
                len(pair_tests),
                needed,
            )
            merges.append(merge)
            agreed = agreed.merged(a, b, partitions)


def _weakest_failing_pair(
    selected: np.ndarray, labels: np.ndarray, needed: int
) -> tuple[int, int] | None:
    """The failing pair to merge first (see :func:`calibrated_consensus`), or None."""
    n_clusters = selected.shape[1]
    a, b = np.triu_indices(n_clusters, k=1)
    selecting = (selected[:, a, b] > 0).sum(axis=0)
    failing = np.flatnonzero(selecting < needed)
    if failing.size == 0:
        return None
    genes = selected[:, a, b].sum(axis=0)
    sizes = np.bincount(labels, minlength=n_clusters)
    cells = sizes[a] + sizes[b]
    weakest = failing[np.lexsort((cells[failing], genes[failing], selecting[failing]))[0]]
    return int(a[weakest]), int(b[weakest])


def _log_passed(calibrated: CalibratedConsensus) -> None:
    n_clusters = int(calibrated.consensus.labels.max()) + 1
    if n_clusters > 1:
        logger.info(
            "consensus: every pair of the %d clusters selects genes in at least %d of %d draws",
            n_clusters,
            calibrated.needed,
            len(calibrated.tests),
        )
