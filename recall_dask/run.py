"""One cell matrix from counts to calibrated labels, stage by stage: :func:`run_recall`.

recall (``FindClustersRecall``): counts -> variable genes -> artificial genes from their
nulls -> augmented, log-normalized matrix (in a Zarr work store, or in worker memory).
Count splitting (``FindClustersCountsplit``): counts -> train and test halves -> variable genes
of the train half -> its log-normalized variable genes, and the log-normalized test half of
all genes (both in the work store, or in worker memory). Each method prepares its inputs
(:mod:`recall_dask.methods`); then both, per draw (:mod:`recall_dask.draw`): scaling and
exact PCA -> kNN and SNN graph, as tasks on the workers -> calibration loop, each clustering a
task, with the method's pair test -> labels, embedding and the ``uns['recall']`` record
(:class:`RecallResult`), which :mod:`recall_dask.api` writes into the AnnData.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd

from recall_dask.calibrate import (
    Iteration,
    Step,
    agreed_draws,
    calibrate_draws,
    draw_answers,
    draws_needed,
)
from recall_dask.consensus import CalibratedConsensus, calibrated_consensus, consensus
from recall_dask.draw import DrawStages
from recall_dask.errors import InputError
from recall_dask.io.batches import Batches
from recall_dask.io.checkpoints import NO_CHECKPOINTS, NoCheckpoints
from recall_dask.io.storage import Location, StorageOptions
from recall_dask.methods import METHODS
from recall_dask.methods.draws import draw_seeds, for_each_draw
from recall_dask.params import RecallParams
from recall_dask.progress import stage
from recall_dask.tasks import draw_tasks

logger = logging.getLogger(__name__)

_VERSIONED = (
    "recall-dask",
    "dask",
    "distributed",
    "anndata",
    "zarr",
    "numpy",
    "scipy",
    "numba",
    "igraph",
    "leidenalg",
    "scikit-misc",
)


@dataclass(frozen=True)
class RecallResult:
    """What a run adds to the AnnData: final and first clusters, the embedding, each cell's
    confidence (several draws only), the ``uns['recall']`` record, and with batches the
    embedding Harmony corrected and each cell's batch."""

    labels: np.ndarray
    initial_labels: np.ndarray
    embedding: np.ndarray
    confidence: np.ndarray | None
    record: dict[str, Any]
    harmony: np.ndarray | None = None
    batches: Batches | None = None


def run_recall(
    counts: da.Array,
    var: pd.DataFrame,
    params: RecallParams,
    store: Path | str | None = None,
    storage_options: StorageOptions = None,
    checkpoints: NoCheckpoints = NO_CHECKPOINTS,
    batches: Batches | None = None,
) -> RecallResult:
    """Calibrated clusters, embedding and the ``uns['recall']`` record for a count matrix, by
    ``params.method``, over ``params.draws`` draws; with ``batches``, each draw's embedding
    is corrected by Harmony before its graph (:mod:`recall_dask.integrate`), and the method
    conditions on the batches (:mod:`recall_dask.methods`).

    ``store`` is the path or URL of the work directory for the normalized matrices; ``None``
    keeps them in worker memory. With several draws each draw runs R's loop on its own, and the
    answer is the consensus of the draws' answers around a medoid that has the run's number of
    clusters (:func:`recall_dask.calibrate.agreed_draws`, :mod:`recall_dask.consensus`), whose
    every pair then passes the draws' own pair tests (pairs that too few draws tell apart are
    merged, :func:`recall_dask.consensus.calibrated_consensus`); the embedding, the first
    clusters, the variable genes and the markers are the medoid draw's.
    Stages that ``checkpoints`` (in ``store``) lists as finished are reused, the others
    recorded there.
    """
    n_cells = counts.shape[0]
    if n_cells < params.k_neighbors:
        raise InputError(f"fewer cells ({n_cells}) than neighbors (k = {params.k_neighbors})")
    for miss in params.misses():
        warnings.warn(miss, UserWarning, stacklevel=2)
    if batches is not None:
        logger.info("%s", batches.summary())
    timings: dict[str, float] = {}
    draws = METHODS[params.method](
        counts, var, params, timings, store, storage_options, checkpoints, batches
    )
    tasks = draw_tasks()
    try:
        work = None if store is None else Location.of(store, storage_options)
        stages = DrawStages(params, tasks, checkpoints, work, n_cells, batches, timings)
        with stage("scaling and PCA" if batches is None else "scaling, PCA and Harmony", timings):
            embedded = for_each_draw(lambda m: stages.embedded(m, draws[m].rows), range(len(draws)))
        whole_embeddings = [draw.whole for draw in embedded]
        with stage("neighbor graph", timings):
            graphs = for_each_draw(lambda m: stages.graph(m, embedded[m]), range(len(draws)))
        embedded.clear()  # the loop needs no PCs
        with stage("calibration", timings):
            pair_tests = [draw.pair_test for draw in draws]
            steps = calibrate_draws(graphs, pair_tests, params, checkpoints, tasks)
    finally:
        tasks.close()
    answers = draw_answers(steps)
    if len(draws) == 1:
        (last,) = answers
        medoid, labels, confidence = 0, last.labels, None
        n_selected, markers = last.n_selected, last.markers
    else:
        with stage("consensus", timings):
            partitions = [answer.labels for answer in answers]
            agreed = consensus(partitions, among=agreed_draws(answers, params.agreement))
            calibrated = calibrated_consensus(
                agreed,
                partitions,
                [draw.pair_test for draw in draws],
                draws_needed(params.draws, params.agreement),
            )
            agreed = calibrated.consensus
            medoid, labels, confidence = agreed.medoid, agreed.labels, agreed.confidence
            n_selected, markers = calibrated.agreed_n_selected, calibrated.tests[medoid][1]
    genes = var.index[draws[medoid].genes]
    record = {
        "method": params.method,
        "params": params.as_dict(),
        "seed": params.seed,
        "versions": _versions(() if batches is None else ("harmonypy",)),
        "variable_genes": np.asarray(genes, dtype=str),
        "iterations": {str(i): _step_summary(step) for i, step in enumerate(steps)},
        "n_iterations": len(steps),
        "resolution": answers[medoid].resolution,
        "n_clusters": int(labels.max()) + 1,
        "n_selected": n_selected,
        # Two parallel arrays, because stores sort dict keys and the stage order matters.
        "stage_seconds": {
            "stage": np.array(list(timings), dtype=str),
            "seconds": np.array(list(timings.values())),
        },
    }
    if markers is not None:  # count splitting has no knockoff W
        record["markers"] = markers.record(genes)
    if len(draws) > 1:
        record["stability"] = _stability(steps, answers, calibrated, params)
    if batches is not None:
        record["batches"] = batch_record(labels, batches)
        _log_unmixed(record["batches"])
    initial = steps[0].draws[medoid].labels
    embeddings = whole_embeddings[medoid]()
    harmony = embeddings[1] if batches is not None else None
    return RecallResult(
        labels, initial, embeddings[0], confidence, record, harmony=harmony, batches=batches
    )


def batch_record(labels: np.ndarray, batches: Batches) -> dict[str, Any]:
    """``uns['recall']['batches']``: the batch key and names, each cluster's cells per batch
    (clusters x batches), and how well each cluster mixes the batches: the entropy of its
    batches over the entropy of all cells' batches (1: as mixed as the data; 0: one batch)."""
    n_clusters = int(labels.max()) + 1
    composition = np.zeros((n_clusters, batches.n_batches), dtype=np.int64)
    np.add.at(composition, (labels, batches.codes), 1)
    return {
        "key": batches.key,
        "names": np.asarray(batches.names, dtype=str),
        "composition": composition,
        "mixing": _entropy(composition) / _entropy(composition.sum(axis=0, keepdims=True))[0],
    }


def _log_unmixed(record: dict[str, Any], most: float = 0.95) -> None:
    """A progress line for each cluster whose cells come from one batch: a type found there
    only, or a difference of that batch that its null did not absorb."""
    composition = record["composition"]
    share = composition.max(axis=1) / composition.sum(axis=1)
    for cluster in np.flatnonzero(share >= most):
        logger.info(
            "cluster %d: %.0f%% of its %d cells from batch %s",
            cluster,
            100 * share[cluster],
            composition[cluster].sum(),
            record["names"][composition[cluster].argmax()],
        )


def _entropy(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row of counts."""
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(share > 0, share * np.log(share), 0.0), axis=1)


def _step_summary(step: Step) -> dict[str, Any]:
    """One draw: R's trace of the iteration; several: each draw's clusters (-1 once it has
    stopped) and verdict."""
    if len(step.draws) == 1:
        return step.draws[0].summary()
    return {
        "resolution": step.resolution,
        "n_clusters": _clusters_per_draw(step),
        "passed": step.passed,
        "n_passed": int(step.passed.sum()),
        "n_stopped": int(step.stopped.sum()),
        "accepted": step.finished,
    }


def _clusters_per_draw(step: Step) -> np.ndarray:
    return np.array([-1 if draw is None else draw.n_clusters for draw in step.draws])


def _stability(
    steps: list[Step],
    answers: list[Iteration],
    calibrated: CalibratedConsensus,
    params: RecallParams,
) -> dict[str, Any]:
    """``uns['recall']['stability']``: the draws, their own answers, how far they agree, and
    how the consensus clusters passed every draw's pair tests."""
    agreed = calibrated.consensus
    return {
        "draw_seeds": np.array(draw_seeds(params.seed, params.draws), dtype=np.int64),
        "medoid": agreed.medoid,
        "needed": draws_needed(params.draws, params.agreement),
        "resolutions": np.array([step.resolution for step in steps]),
        "n_clusters": np.array([_clusters_per_draw(step) for step in steps]),
        "passed": np.array([step.passed for step in steps]),
        "stopped": np.array([step.stopped for step in steps]),
        "answer_n_clusters": np.array([answer.n_clusters for answer in answers]),
        "answer_resolutions": np.array([answer.resolution for answer in answers]),
        "cluster_stability": agreed.cluster_stability,
        "pair_separation": agreed.pair_separation,
        "pair_n_selected": calibrated.n_selected,
        "pair_support": calibrated.pair_support,
        "merges": calibrated.record(),
    }


def _versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """The versions of the packages that make the answer, with the ``extra`` ones a run used."""
    found = {}
    for name in _VERSIONED + extra:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "unknown"
    return found
