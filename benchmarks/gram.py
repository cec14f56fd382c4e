"""Where BLAS beats the sparse Gram kernel: one row block's C^T C, both ways, by density.

The sparse kernel (``accumulate_gram``) costs about the sum of the rows' squared nonzero
counts; BLAS ``syrk`` on the densified block costs rows x features^2 at a much higher rate.
This times both on 1,024 random rows of 4,000 features (a PBMC-sized augmented matrix) on one
thread and prints the ratio mean(row count^2) / features^2 at each density, which is what
the ``recall.dense-gram-ratio`` dask config knob compares.

    OPENBLAS_NUM_THREADS=1 python benchmarks/gram.py
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import dsyrk

from recall_dask.pca._kernels import accumulate_gram
from recall_dask.pca.exact import _GRAM_TILE

FEATURES, ROWS = 4000, 1024


def seconds(func, *args) -> float:
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        func(*args)
        best = min(best, time.perf_counter() - start)
    return best


def sparse_gram(x: sp.csr_matrix) -> None:
    accumulate_gram(x.indptr, x.indices, x.data, np.zeros((FEATURES, FEATURES)), _GRAM_TILE)


def blas_gram(x: sp.csr_matrix) -> None:
    upper = np.zeros((FEATURES, FEATURES))
    dsyrk(1.0, x.toarray().T, c=upper.T, beta=1.0, trans=0, lower=1, overwrite_c=1)


def main() -> None:
    rng = np.random.default_rng(0)
    print("| density | mean(row count^2) / features^2 | sparse kernel s | BLAS syrk s |")
    print("|---:|---:|---:|---:|")
    for density in (0.05, 0.1, 0.14, 0.2, 0.3, 0.5):
        x = sp.random(ROWS, FEATURES, density=density, format="csr", random_state=rng)
        x.sort_indices()
        sparse, dense = seconds(sparse_gram, x), seconds(blas_gram, x)
        ratio = np.mean(np.diff(x.indptr).astype(float) ** 2) / FEATURES**2
        print(f"| {density:.2f} | {ratio:.4f} | {sparse:.3f} | {dense:.3f} |")


if __name__ == "__main__":
    main()
