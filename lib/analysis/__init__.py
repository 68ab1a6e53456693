"""What one-shot pruning removes, and which activations fire together (issue 16).

- :mod:`lib.analysis.masks`: Jaccard, Hamming and cosine agreement of two sets of saved masks, per layer and per
  feature (Wanda vs SparseGPT; 2:4 vs unstructured), and the loader of a ``make prune`` output directory;
- :mod:`lib.analysis.coactivation`: binary activation matrices at the sparse GEMV's thresholds, Hamming
  orderings, k-means clusters, t-SNE and the MMM block coherence;
- :mod:`lib.analysis.figures`: their figures (PNG);
- :mod:`lib.analysis.store`: their rows as tables of the results database.

``docs/analysis.md`` gives the formulas, the published setting and the tables' schemas.
"""
