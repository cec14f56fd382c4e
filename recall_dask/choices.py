"""The values that the choice options accept, and the defaults the command line shows, kept
apart from the modules that implement them so that ``recall-dask --help`` and
``import recall_dask`` import nothing heavy.

Each tuple is the one list of its names: :class:`~recall_dask.params.RecallParams` validates
against it, the command line offers it, and each implementation registry is keyed by it
(``tests/test_params.py`` checks that they agree).
"""

#: How cluster pairs are tested (``--method``); implemented in :mod:`recall_dask.methods`.
METHODS = ("recall", "countsplit")
#: Nulls of the artificial genes (``--null-method``); implemented in :mod:`recall_dask.nulls`.
NULL_METHODS = (
    "zip",
    "nb",
    "poisson",
    "zip-copula",
    "nb-copula",
    "poisson-copula",
    "gaussian-copula",
)
#: Nulls whose count marginal has no overdispersion: with each cell's depth their twins of
#: highly expressed genes are more regular than the genes (docs/explanation/depth.md).
NULLS_WITHOUT_OVERDISPERSION = ("zip", "poisson", "zip-copula", "poisson-copula")
#: How calibration accounts for each cell's sequencing depth (``--depth``): ``cell`` in
#: :mod:`recall_dask.nulls.depth` and :mod:`recall_dask.methods.countsplit`; ``none`` as the R
#: package.
DEPTHS = ("cell", "none")
#: How a pair of clusters is tested with batches (``--batch-test``): over all cells, or van
#: Elteren's test within batches (:class:`recall_dask.stats.ranksums.StratifiedGroups`).
BATCH_TESTS = ("pooled", "within")
#: How count splitting splits each count (``--split``): ``nb`` the Dirichlet-multinomial split of
#: negative binomial counts, ``poisson`` the binomial split of ``countsplit``'s default.
SPLITS = ("nb", "poisson")
#: Modularity clustering (``--algorithm``); implemented in :mod:`recall_dask.graph.cluster`.
ALGORITHMS = ("louvain", "leiden")
#: Neighbor searches (``--neighbors``); implemented in :mod:`recall_dask.graph.neighbors`.
NEIGHBOR_SEARCHES = ("annoy", "exact")
#: Kinds of new Dask cluster (``--cluster``); started by :mod:`recall_dask.dask_cluster`.
CLUSTER_KINDS = ("local", "slurm", "kubernetes")
#: ``simulate``'s mean of log base expression: with sigma 2.3, about 5% of entries are nonzero
#: and a cell has about 2,400 UMIs over 20,000 genes, like 10x data. Higher values give denser
#: data.
LOG_MEAN = -5.0
#: ``simulate``'s spread of sequencing depth: the sd of the cells' log size factors. Real data
#: sit at 0.4 to 0.6 (PBMC 3k 0.43, sc_mixology 0.51).
DEPTH_SD = 0.3
#: Where a run's results go by default (``key_added``): ``obs['recall']``, ``uns['recall']``,
#: ``obsm['X_recall_pca']``...; see :class:`recall_dask.io.results.ResultKeys`.
DEFAULT_KEY = "recall"
