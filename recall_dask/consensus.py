"""One answer from many draws: a consensus of the draws' partitions, and how stable it is.

With ``--draws M`` every draw of the artificial genes (or every count split) ends R's loop
with its own clusters, and two draws agree only in part. The consensus takes the medoid draw
(the one that agrees best, by mean adjusted Rand index, with the others; the run picks it
among the draws that found the run's number of clusters), matches every other draw's clusters
to the medoid's by largest overlap, and gives each cell the label most draws give it, ties
going to the medoid. A cell's confidence is the fraction of draws that give it its consensus
label; a cluster's stability is the mean confidence of its cells; a pair of clusters is
separate in a draw when the draw puts most of their cells in different clusters of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
    separate (0 on the diagonal); ``medoid`` the index of the medoid draw.
    """

    labels: np.ndarray
    medoid: int
    confidence: np.ndarray
    cluster_stability: np.ndarray
    pair_separation: np.ndarray


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
    confidence = (votes == chosen).mean(axis=0)
    labels = order_by_size(chosen)
    n_clusters = int(labels.max()) + 1
    stability = np.bincount(labels, weights=confidence) / np.bincount(labels)
    separate = np.zeros((n_clusters, n_clusters))
    for partition in partitions:
        dominant = np.argmax(contingency(labels, partition), axis=1)
        separate += dominant[:, None] != dominant[None, :]
    return Consensus(labels, centre, confidence, stability, separate / len(partitions))
