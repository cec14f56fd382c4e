"""Tiny shared fixtures."""

from __future__ import annotations

import os

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import settings
from scipy.stats import nbinom, norm, poisson

# CI (HYPOTHESIS_PROFILE=ci) replays the same examples on every run, so a failure there is
# reproducible from its log; elsewhere every run draws new ones.
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: Row-chunk layouts that exercise chunk boundaries, by readable id.
ROW_CHUNKINGS = {"one-chunk": -1, "37-rows": 37, "uneven": (50, 1, 99, 67), "1-row": 1}


def as_row_chunked(matrix: sp.csr_matrix, chunks) -> da.Array:
    """A dask array of CSR row blocks with the given row chunking."""
    n = matrix.shape[0]
    if chunks == -1:
        sizes = (n,)
    elif isinstance(chunks, int):
        sizes = (chunks,) * (n // chunks) + ((n % chunks,) if n % chunks else ())
    else:
        sizes = tuple(chunks)
    assert sum(sizes) == n
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    blocks = [
        da.from_delayed(
            _identity(matrix[a:b]), (b - a, matrix.shape[1]), dtype=matrix.dtype, meta=matrix[:0]
        )
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return da.concatenate(blocks, axis=0)


def _identity(x):
    import dask

    return dask.delayed(x, traverse=False)


@pytest.fixture(scope="session")
def pbmc3k_run(tmp_path_factory):
    """The R package's procedure on the bundled PBMC 3k, through the command line (its ZIP
    null, blind to depth: our defaults differ there, docs/explanation/depth.md): the output
    store and the labels CSV."""
    from recall_dask.cli import main
    from recall_dask.io import BUNDLED_PBMC3K

    tmp = tmp_path_factory.mktemp("pbmc")
    out, labels_csv = tmp / "pbmc.zarr", tmp / "labels.csv"
    r_null = ["--null-method", "zip", "--depth", "none"]
    code = main(
        ["run", str(BUNDLED_PBMC3K), "-o", str(out), "--labels-csv", str(labels_csv), *r_null]
    )
    assert code == 0
    return out, labels_csv


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20251125)


def simulate_dense(*args, **kwargs):
    """Simulated counts dense enough (log mean -1) that a few hundred genes carry the groups."""
    from recall_dask.simulate import simulate

    return simulate(*args, log_mean=-1.0, **kwargs)


def poisson_population(n_cells: int, n_genes: int, seed: int):
    """One homogeneous population of Poisson counts with equal depth: no groups, and the model
    under which every method of calibration is valid (count splitting's halves are then
    independent)."""
    import anndata as ad
    import pandas as pd

    from recall_dask.simulate import group_means

    rng = np.random.default_rng(seed)
    means = group_means(n_genes, 1, 0.0, seed, log_mean=-1.0)[0]
    counts = sp.csr_matrix(rng.poisson(means, size=(n_cells, n_genes)).astype(np.float32))
    return ad.AnnData(
        X=counts,
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
    )


def latent_gaussian_counts(rng: np.random.Generator, n: int, p: int, quantile, rho: float = 0.6):
    """Data with a known Gaussian copula: ``quantile(Phi(z))`` (n x p), with rows ``z`` drawn
    from ``N(0, R)``, every correlation in ``R`` equal to ``rho``."""
    correlation = np.full((p, p), rho)
    np.fill_diagonal(correlation, 1.0)
    z = rng.standard_normal((n, p)) @ np.linalg.cholesky(correlation).T
    return quantile(norm.cdf(z))


def degenerate_columns(n: int) -> np.ndarray:
    """Degenerate genes of ``n`` cells: all-zero, no zeros, only 0/1, a single nonzero, constant."""
    cols = np.zeros((n, 5))
    cols[:, 1] = 1 + np.arange(n) % 5
    cols[::3, 2] = 1
    cols[7, 3] = 4
    cols[:, 4] = 3
    return cols


def histogram(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nonzero values of ``column`` and how many cells hold each."""
    values, counts = np.unique(column[column > 0], return_counts=True)
    return values, counts


def _scipy_count(marginal, dist, values: np.ndarray) -> np.ndarray:
    """scipy's ``dist`` ("cdf" or "ppf") of the NB part of a count marginal, per column (Poisson
    where theta is infinite)."""
    theta = np.where(np.isfinite(marginal.theta), marginal.theta, 1.0)
    nb = getattr(nbinom, dist)(values, theta, theta / (theta + marginal.rate))
    return np.where(np.isinf(marginal.theta), getattr(poisson, dist)(values, marginal.rate), nb)


def scipy_count_cdf(marginal, k: np.ndarray) -> np.ndarray:
    """Oracle ``P(X <= k)`` (cells x genes) of a zero-inflated count marginal; 0 below 0."""
    pi = marginal.pi
    return np.where(k < 0, 0.0, pi + (1 - pi) * _scipy_count(marginal, "cdf", k))


def scipy_count_quantile(marginal, u: np.ndarray) -> np.ndarray:
    """Oracle quantile (cells x genes) of a zero-inflated count marginal at uniforms ``u``."""
    pi = marginal.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.clip((u - pi) / (1 - pi), 0, 1)
    return np.where(u < pi, 0.0, np.nan_to_num(_scipy_count(marginal, "ppf", v)))


def hand_made_record() -> dict:
    """A run's uns['recall']: 4 -> 3 -> 3 clusters, failing pairs (0, 2) and (1, 2)."""
    # Imported here, not when conftest loads: the package imports distributed, which loaded
    # before pytest's log capture leaves caplog blind to the lines of the runs' clusters.
    from recall_dask.params import RecallParams

    selected = [np.full((k, k), 5) for k in (4, 3, 3)]
    for matrix, pair in zip(selected, [(0, 2), (1, 2), None], strict=True):
        np.fill_diagonal(matrix, -1)
        if pair:
            matrix[pair] = matrix[pair[::-1]] = 0
    iterations = {
        str(i): {
            "resolution": 0.8 * 0.8**i,
            "n_clusters": m.shape[0],
            "n_pairs_tested": m.shape[0] * (m.shape[0] - 1) // 2,
            "failing_pair": np.array(pair if pair else [], dtype=int),
            "n_selected": m,
        }
        for i, (m, pair) in enumerate(zip(selected, [(0, 2), (1, 2), None], strict=True))
    }
    return {
        "params": RecallParams(seed=7).as_dict(),
        "versions": {"recall-dask": "0.1.0", "dask": "2099.1"},
        "iterations": iterations,
        "n_iterations": 3,
        "markers": {
            "cluster_a": np.array([0, 0, 1]),
            "cluster_b": np.array([1, 2, 2]),
            "gene": np.array(["CD3E", "MS4A1", "<NKG7>"]),
            "W": np.array([12.5, 9.25, 3.0]),
            "higher_in": np.array([0, 2, 1]),
        },
    }


def recorded_adata(rng: np.random.Generator, n_cells: int = 120) -> ad.AnnData:
    """An AnnData holding :func:`hand_made_record` and labels, as a run and its report leave it."""
    from recall_dask.api import categorical_labels  # imported here: see hand_made_record
    from recall_dask.io.results import ResultKeys

    keys = ResultKeys.of("recall")
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]))
    for key, k in ((keys.initial, 4), (keys.labels, 3), (keys.default, 5)):
        adata.obs[key] = categorical_labels(np.arange(n_cells) % k, adata.obs_names)
    adata.obsm[keys.umap] = rng.normal(size=(n_cells, 2))
    adata.uns[keys.record] = hand_made_record()
    return adata
