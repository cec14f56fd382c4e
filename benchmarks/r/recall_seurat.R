# The recall procedure in R (FindClustersRecall's steps on Seurat 4.3), for measuring parity.
#
#   Rscript recall_seurat.R COUNTS_DIR SEED OUT_DIR
#
# COUNTS_DIR is a Cell Ranger v3 folder. The steps and defaults are those of
# FindClustersRecall: vst's 2,000 variable genes of the counts; one artificial gene per variable
# gene, drawn from a zero-inflated Poisson fitted by moments; the augmented matrix
# [genes; artificial genes] log-normalized, scaled, 50 PCs, Annoy neighbors on 10 PCs (k = 20),
# SNN, Louvain at 0.8; every pair of clusters tested with FindMarkers(logfc.threshold = 0,
# min.pct = 0), W = -log10 p(gene) + log10 p(artificial), knockoff+ at q = 0.05 (offset 1);
# the resolution drops by 20% while some pair selects nothing. FindMarkers computes its
# p-values with limma::rankSumTestWithCorrelation when limma is installed, as here.
#
# The seed is set right before the draws: RunPCA calls set.seed(42) itself, so a seed set at
# the start would never reach them.
#
# OUT_DIR receives what benchmarks/r_parity.py compares stage by stage (gene positions are
# 0-based rows of features.tsv, cells are in barcodes.tsv order):
#   labels.csv            barcode, default_cluster (plain clustering at 0.8), recall_cluster
#   variable_genes.txt    the variable genes, in Seurat's rank order
#   draws.mtx             the artificial genes (variable genes x cells, in that order)
#   embedding.tsv         the augmented matrix's PCA embedding (cells x 50), and pca_sdev.txt
#   neighbors.tsv         its Annoy neighbors on 10 PCs (cells x 20, 0-based)
#   iterations.tsv        per iteration: resolution, clusters, failing pair ("" if none)
#   clusters_<i>.txt      the clusters of iteration i (1-based)
#   summary.txt           one line: seed, clusters, iterations, pairs tested, seconds
suppressPackageStartupMessages({library(Seurat); library(Matrix); library(lamW)})
args <- commandArgs(trailingOnly = TRUE)
counts_dir <- args[1]; seed <- as.integer(args[2]); out <- args[3]
dir.create(out, showWarnings = FALSE, recursive = TRUE)
start <- Sys.time()

counts <- as(Read10X(counts_dir), "CsparseMatrix")
gene_names <- rownames(counts)
plain <- CreateSeuratObject(counts)
plain <- NormalizeData(plain, verbose = FALSE)
plain <- FindVariableFeatures(plain, verbose = FALSE)
plain <- ScaleData(plain, verbose = FALSE)
plain <- RunPCA(plain, verbose = FALSE)
plain <- FindNeighbors(plain, dims = 1:10, verbose = FALSE)
plain <- FindClusters(plain, resolution = 0.8, verbose = FALSE)

variable <- VariableFeatures(plain)
# CreateSeuratObject turns "_" into "-" in feature names; match on the names it made.
positions <- match(variable, rownames(plain)) - 1
writeLines(as.character(positions), file.path(out, "variable_genes.txt"))
real <- as.matrix(GetAssayData(plain, slot = "counts")[variable, ])

zip_moments_draw <- function(x) {
  # Zero-inflated Poisson by moments: the mean of the nonzero part is lambda / (1 - exp(-lambda)).
  zero_fraction <- mean(x == 0); mu <- mean(x)
  g <- mu / (1 - zero_fraction)
  lambda <- lambertW0(-g * exp(-g)) + g
  pi0 <- 1 - mu / lambda
  draw <- rpois(length(x), lambda)
  draw[runif(length(x)) < pi0] <- 0
  draw
}
set.seed(seed)
artificial <- t(apply(real, 1, zip_moments_draw))
rownames(artificial) <- paste0("artificial-", seq_len(nrow(real)))
writeMM(Matrix(artificial, sparse = TRUE), file.path(out, "draws.mtx"))

aug <- CreateSeuratObject(Matrix(rbind(real, artificial), sparse = TRUE))
aug <- NormalizeData(aug, verbose = FALSE)
aug <- FindVariableFeatures(aug, nfeatures = 2 * length(variable), verbose = FALSE)
aug <- ScaleData(aug, verbose = FALSE)
aug <- RunPCA(aug, features = VariableFeatures(aug), verbose = FALSE)
embedding <- Embeddings(aug, "pca")
write.table(format(embedding, digits = 17), file.path(out, "embedding.tsv"), sep = "\t",
            quote = FALSE, col.names = FALSE, row.names = FALSE)
writeLines(format(Stdev(aug, "pca"), digits = 17), file.path(out, "pca_sdev.txt"))
neighbors <- FindNeighbors(embedding[, 1:10], k.param = 20, return.neighbor = TRUE,
                           verbose = FALSE)
write.table(Indices(neighbors) - 1, file.path(out, "neighbors.tsv"), sep = "\t",
            quote = FALSE, col.names = FALSE, row.names = FALSE)
aug <- FindNeighbors(aug, dims = 1:10, verbose = FALSE)

knockoff_threshold <- function(W, q) {
  W <- W[!is.na(W)]
  for (t in sort(c(0, abs(W)))) if ((1 + sum(W <= -t)) / max(1, sum(W >= t)) <= q) return(t)
  Inf
}
real_rows <- rownames(aug)[seq_len(nrow(real))]
artificial_rows <- rownames(aug)[nrow(real) + seq_len(nrow(real))]
resolution <- 0.8; iteration <- 0; pairs_tested <- 0; trace <- NULL
repeat {
  iteration <- iteration + 1
  aug <- FindClusters(aug, resolution = resolution, verbose = FALSE)
  ids <- levels(Idents(aug)); k <- length(ids); failing <- ""
  writeLines(as.character(Idents(aug)), file.path(out, sprintf("clusters_%d.txt", iteration)))
  if (k > 1) for (i in 2:k) {
    for (j in 1:(i - 1)) {
      pairs_tested <- pairs_tested + 1
      markers <- FindMarkers(aug, ident.1 = ids[i], ident.2 = ids[j], logfc.threshold = 0,
                             min.pct = 0, verbose = FALSE)
      W <- -log10(markers[real_rows, "p_val"]) + log10(markers[artificial_rows, "p_val"])
      if (sum(W >= knockoff_threshold(W, 0.05), na.rm = TRUE) == 0) {
        failing <- paste(ids[j], ids[i]); break
      }
    }
    if (nzchar(failing)) break
  }
  trace <- rbind(trace, data.frame(resolution = resolution, clusters = k, failing = failing))
  cat(sprintf("iteration %d: resolution %.4g, %d clusters%s\n", iteration, resolution, k,
              if (nzchar(failing)) paste0(", pair ", failing, " selects nothing") else ""))
  if (!nzchar(failing)) break
  resolution <- 0.8 * resolution
}
seconds <- as.numeric(difftime(Sys.time(), start, units = "secs"))
write.table(trace, file.path(out, "iterations.tsv"), sep = "\t", quote = FALSE, row.names = FALSE)
write.csv(data.frame(barcode = colnames(plain), default_cluster = as.character(Idents(plain)),
                     recall_cluster = as.character(Idents(aug))),
          file.path(out, "labels.csv"), row.names = FALSE, quote = FALSE)
writeLines(sprintf("seed=%d clusters=%d iterations=%d pairs_tested=%d seconds=%.1f", seed, k,
                   iteration, pairs_tested, seconds), file.path(out, "summary.txt"))
