# Golden fixtures from Seurat 4.3.0 (with limma), for tests that run without R.
#
#   Rscript seurat_golden.R COUNTS_DIR SEED OUT_DIR
#
# Run by make_golden.py, which packs OUT_DIR into tests/golden/*.npz; see README.md there.
# COUNTS_DIR is the bundled PBMC 3k (a Cell Ranger v3 folder). Gene positions are 0-based rows
# of features.tsv; cells are in barcodes.tsv order. Everything is written as plain text:
#
# PBMC 3k as Seurat's tutorial clusters it (NormalizeData, FindVariableFeatures "vst",
# ScaleData, RunPCA, FindNeighbors on 10 PCs, FindClusters):
#   plain_variable_genes.txt   the 2,000 variable genes, in Seurat's rank order
#   plain_embedding.tsv        the first 10 PCs (cells x 10)
#   plain_neighbors.tsv        FindNeighbors' Annoy neighbors on them (cells x 20, 0-based)
#   plain_snn.tsv              its SNN graph as "row col weight" (0-based, upper triangle)
#   plain_clusters.tsv         FindClusters (Louvain, 10 starts, random.seed 0) at 0.8, 0.5, 0.3
# A small graph with many tied weights: three 6 x 6 integer lattices, k = 8:
#   lattice_points.tsv, lattice_snn.tsv, lattice_clusters.tsv (resolutions 1.2, 0.8, 0.4)
# The augmented matrix of recall with R's draws of SEED (as FindClustersRecall builds it):
#   draws.mtx                  the artificial genes (variable genes x cells, rank order)
#   augmented_embedding.tsv    RunPCA's first 10 PCs, and augmented_sdev.txt (50 values)
#   augmented_clusters.txt     FindClusters at 0.8 on its SNN graph
#   markers_<a>_<b>.tsv        FindMarkers(ident.1 = a, ident.2 = b, logfc.threshold = 0,
#                              min.pct = 0) for three pairs of those clusters: per gene, the
#                              p_val of the gene, of its artificial twin, and W
#   markers_selected.tsv       the genes knockoff+ (q = 0.05, offset 1) selects per pair
suppressPackageStartupMessages({library(Seurat); library(Matrix); library(lamW)})
args <- commandArgs(trailingOnly = TRUE)
counts_dir <- args[1]; seed <- as.integer(args[2]); out <- args[3]
dir.create(out, showWarnings = FALSE, recursive = TRUE)
put <- function(x, name) {
  write.table(format(x, digits = 17), file.path(out, name), sep = "\t", quote = FALSE,
              col.names = FALSE, row.names = FALSE)
}
upper_triplets <- function(graph) {
  t <- summary(as(graph, "CsparseMatrix"))
  t <- t[t$i < t$j, ]
  data.frame(i = t$i - 1, j = t$j - 1, x = t$x)
}

counts <- as(Read10X(counts_dir), "CsparseMatrix")
plain <- CreateSeuratObject(counts)
plain <- NormalizeData(plain, verbose = FALSE)
plain <- FindVariableFeatures(plain, verbose = FALSE)
plain <- ScaleData(plain, verbose = FALSE)
plain <- RunPCA(plain, verbose = FALSE)
variable <- VariableFeatures(plain)
writeLines(as.character(match(variable, rownames(plain)) - 1),
           file.path(out, "plain_variable_genes.txt"))
embedding <- Embeddings(plain, "pca")[, 1:10]
put(embedding, "plain_embedding.tsv")
put(Indices(FindNeighbors(embedding, k.param = 20, return.neighbor = TRUE, verbose = FALSE)) - 1,
    "plain_neighbors.tsv")
plain <- FindNeighbors(plain, dims = 1:10, verbose = FALSE)
put(upper_triplets(plain[["RNA_snn"]]), "plain_snn.tsv")
plain <- FindClusters(plain, resolution = c(0.8, 0.5, 0.3), verbose = FALSE)
put(sapply(c(0.8, 0.5, 0.3), function(r) as.character(plain[[paste0("RNA_snn_res.", r)]][, 1])),
    "plain_clusters.tsv")

lattice <- do.call(rbind, lapply(0:2, function(g) {
  as.matrix(expand.grid(x = 0:5 + 20 * g, y = 0:5 + 7 * (g %% 2)))
}))
rownames(lattice) <- paste0("p", seq_len(nrow(lattice)))
put(lattice, "lattice_points.tsv")
lattice_graphs <- FindNeighbors(lattice, k.param = 8, verbose = FALSE)
put(upper_triplets(lattice_graphs$snn), "lattice_snn.tsv")
put(sapply(c(1.2, 0.8, 0.4), function(r) {
  as.character(FindClusters(lattice_graphs$snn, resolution = r, verbose = FALSE)[, 1])
}), "lattice_clusters.tsv")

real <- as.matrix(GetAssayData(plain, slot = "counts")[variable, ])
zip_moments_draw <- function(x) {
  zero_fraction <- mean(x == 0); mu <- mean(x)
  g <- mu / (1 - zero_fraction)
  lambda <- lambertW0(-g * exp(-g)) + g
  draw <- rpois(length(x), lambda)
  draw[runif(length(x)) < 1 - mu / lambda] <- 0
  draw
}
set.seed(seed)
artificial <- t(apply(real, 1, zip_moments_draw))
rownames(artificial) <- paste0("artificial-", seq_len(nrow(real)))
invisible(writeMM(Matrix(artificial, sparse = TRUE), file.path(out, "draws.mtx")))
aug <- CreateSeuratObject(Matrix(rbind(real, artificial), sparse = TRUE))
aug <- NormalizeData(aug, verbose = FALSE)
aug <- FindVariableFeatures(aug, nfeatures = 2 * length(variable), verbose = FALSE)
aug <- ScaleData(aug, verbose = FALSE)
aug <- RunPCA(aug, features = VariableFeatures(aug), verbose = FALSE)
put(Embeddings(aug, "pca")[, 1:10], "augmented_embedding.tsv")
put(Stdev(aug, "pca"), "augmented_sdev.txt")
aug <- FindNeighbors(aug, dims = 1:10, verbose = FALSE)
aug <- FindClusters(aug, resolution = 0.8, verbose = FALSE)
writeLines(as.character(Idents(aug)), file.path(out, "augmented_clusters.txt"))
features <- rownames(aug)  # the genes, then their artificial twins
genes <- seq_len(nrow(real))
knockoff_threshold <- function(W, q) {
  W <- W[!is.na(W)]
  for (t in sort(c(0, abs(W)))) if ((1 + sum(W <= -t)) / max(1, sum(W >= t)) <= q) return(t)
  Inf
}
selected <- NULL
for (pair in list(c("5", "0"), c("1", "0"), c("10", "3"))) {
  markers <- FindMarkers(aug, ident.1 = pair[1], ident.2 = pair[2], logfc.threshold = 0,
                         min.pct = 0, verbose = FALSE)
  p <- markers[features, "p_val"]
  W <- -log10(p[genes]) + log10(p[nrow(real) + genes])
  put(cbind(p[genes], p[nrow(real) + genes], W), sprintf("markers_%s_%s.tsv", pair[1], pair[2]))
  selected <- rbind(selected, data.frame(a = pair[1], b = pair[2],
                                         n = sum(W >= knockoff_threshold(W, 0.05), na.rm = TRUE)))
}
write.table(selected, file.path(out, "markers_selected.tsv"), sep = "\t", quote = FALSE,
            row.names = FALSE)
