"""Every method of calibration, end to end: each null model of recall, and count splitting.

Each must merge a homogeneous population into one cluster, although plain clustering at the
starting resolution splits it, and must keep five simulated groups apart.
"""

from __future__ import annotations

import warnings

import pytest
from conftest import poisson_population, simulate_dense
from sklearn.metrics import adjusted_rand_score

from recall_dask.api import recall
from recall_dask.choices import NULLS_WITHOUT_OVERDISPERSION
from recall_dask.nulls import NULL_METHODS

METHODS = {
    # Nulls without overdispersion with the R package's depth-blind fit (see
    # docs/explanation/depth.md: with each cell's depth they fail composition-differing groups,
    # and warn).
    **{
        null: {
            "null_method": null,
            **({"depth": "none"} if null in NULLS_WITHOUT_OVERDISPERSION else {}),
        }
        for null in NULL_METHODS
    },
    "countsplit": {"method": "countsplit"},
}
FAST = {"n_hvg": 500, "seed": 1, "progress": False}


@pytest.mark.parametrize("options", METHODS.values(), ids=METHODS.keys())
def test_homogeneous_population_is_one_cluster(options):
    adata = poisson_population(2000, 1500, seed=3)
    recall(adata, **FAST, **options)
    record = adata.uns["recall"]
    assert adata.obs["recall_initial"].nunique() >= 2, "plain clustering at 0.8 over-clusters"
    assert adata.obs["recall"].nunique() == 1
    assert record["n_clusters"] == 1 and record["n_iterations"] > 1
    assert record["method"] == options.get("method", "recall")
    assert record["params"]["null_method"] == options.get("null_method", "nb")


@pytest.mark.parametrize("options", METHODS.values(), ids=METHODS.keys())
def test_five_groups_recovered(options):
    adata = simulate_dense(1500, 1500, 5, de_prob=0.1, seed=1)
    with warnings.catch_warnings():  # five well-separated groups: accepted at the start
        warnings.filterwarnings("ignore", "the starting resolution", UserWarning)
        recall(adata, **FAST, **options)
    labels = adata.obs["recall"]
    assert labels.nunique() == 5
    assert adjusted_rand_score(adata.obs["group"], labels) >= 0.95
