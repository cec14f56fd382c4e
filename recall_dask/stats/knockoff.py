"""Knockoff statistics and the knockoff+ threshold that decide which features separate two clusters.

Each real gene is paired with an artificial (null) gene; ``W > 0`` when the real gene is the more
significant of the two. The knockoff+ filter selects ``W >= T`` with ``T`` chosen to control the
false discovery rate, as ``knockoff::knockoff.threshold`` in R.
"""

import numpy as np

_LN10 = np.log(10.0)


def knockoff_statistics(log_p_genes: np.ndarray, log_p_artificial: np.ndarray) -> np.ndarray:
    """``W = -log10 p(gene) + log10 p(artificial)`` from natural-log p-values, element-wise.

    Works on 1-D (features) or 2-D (pairs x features) arrays of equal shape. Inputs are exact
    log p-values, so ``W`` stays finite where R, taking logs of underflowed p-values, gets
    ``Inf`` or ``NaN``.
    """
    log_p_genes = np.asarray(log_p_genes, dtype=np.float64)
    log_p_artificial = np.asarray(log_p_artificial, dtype=np.float64)
    if log_p_genes.shape != log_p_artificial.shape:
        raise ValueError(
            f"gene and artificial p-values differ in shape: "
            f"{log_p_genes.shape} vs {log_p_artificial.shape}"
        )
    return (log_p_artificial - log_p_genes) / _LN10


def knockoff_threshold(W: np.ndarray, fdr: float = 0.05, offset: int = 1) -> float:
    """Knockoff+ threshold: the smallest ``t`` in ``{0} U {|W_j|}`` with
    ``(offset + #{W <= -t}) / max(1, #{W >= t}) <= fdr``, or ``inf`` if there is none.

    Scans the same candidates as R's ``knockoff.threshold``, in ``O(p log p)``: one sort of
    ``W`` and two binary searches per candidate.
    """
    W = np.ravel(np.asarray(W, dtype=np.float64))
    ws = np.sort(W)
    ts = np.sort(np.concatenate([[0.0], np.abs(W)]))
    n_neg = np.searchsorted(ws, -ts, side="right")
    n_pos = W.size - np.searchsorted(ws, ts, side="left")
    ok = np.flatnonzero((offset + n_neg) / np.maximum(1, n_pos) <= fdr)
    return float(ts[ok[0]]) if ok.size else np.inf


def selected(W: np.ndarray, fdr: float = 0.05, offset: int = 1) -> np.ndarray:
    """Boolean mask of the features the knockoff+ filter selects: ``W >= T``."""
    W = np.asarray(W, dtype=np.float64)
    return knockoff_threshold(W, fdr, offset) <= W


def n_selected(W: np.ndarray, fdr: float = 0.05, offset: int = 1) -> int:
    """Number of features the knockoff+ filter selects (0 when the threshold is ``inf``)."""
    return int(np.count_nonzero(selected(W, fdr, offset)))


def strongest_selected(
    W: np.ndarray, fdr: float = 0.05, n_top: int = 10, offset: int = 1
) -> np.ndarray:
    """Indices of the selected features with the largest ``W``, at most ``n_top``, by
    decreasing ``W`` (ties: lower index first)."""
    W = np.asarray(W, dtype=np.float64)
    chosen = np.flatnonzero(selected(W, fdr, offset))
    return chosen[np.argsort(-W[chosen], kind="stable")][:n_top]


def n_selected_per_pair(W2d: np.ndarray, fdr: float = 0.05, offset: int = 1) -> np.ndarray:
    """:func:`n_selected` for each row of a ``(pairs, features)`` array, each row on its own."""
    return np.array([n_selected(row, fdr, offset) for row in np.asarray(W2d)], dtype=np.int64)
