"""Which features fire together: binary activation matrices, Hamming orderings, k-means clusters, t-SNE, and
the block coherence that decides whether multiply–mask–multiply (MMM) pays off (issue 16).

Binary activations. A projection's input activations ``X`` (tokens × features) become the binary matrix
``B`` (features × tokens) with ``B[f, t] = |X[t, f]| > θ``: 1 where the sparse GEMV would keep the entry. ``θ``
is the projection's threshold for a target activation sparsity ``s`` (published: 0.9), computed by the sparse
GEMV's own quantile (:func:`kernels.sparse_gemv.reference.threshold_for`: the ``ceil(s·n)``-th smallest
``|x|``), so the analysis sees the zeros the kernel skips.

Hamming distance between features ``f``, ``g``: the fraction of tokens where they differ,
``d(f, g) = |B_f xor B_g| / T``.

- Ordering (spy plots): features sorted by ``d(f, ref)`` to a reference feature, ties by index.
- Clusters: the ``count`` (published: 128) features nearest the reference (itself first) are clustered by
  k-means (scikit-learn, Euclidean on the 0/1 rows, i.e. the square root of the Hamming count; fixed
  ``random_state`` and ``n_init``: the same seed gives the same labels) for k = 4, 8, 16. Per clustering:
  ``within`` = the mean ``d`` over pairs of distinct features in one cluster, ``between`` = the mean ``d`` over
  pairs in different clusters, ``separation = between / within`` (> 1: the clusters are real).
- t-SNE: scikit-learn's, on the same rows, seeded.
- MMM block coherence for a block size ``b``: the features, in the order given (default: their index), are cut
  into consecutive blocks of ``b`` (the last holds the remainder); coherence is the fraction of
  (block, token) pairs in which every feature of the block is 0. A block that is all zero for a token lets MMM
  skip the block's rows of the weight for that token; the published rule of thumb is that MMM pays off when the
  coherence exceeds 0.3 (:data:`MMM_PAYS_OFF`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from kernels.sparse_gemv.reference import threshold_for

PUBLISHED_SPARSITY = 0.9  # the published activation sparsity of the thresholds
PUBLISHED_KS = (4, 8, 16)
PUBLISHED_FEATURES = 128  # features nearest the reference that are clustered
MMM_PAYS_OFF = 0.3  # block coherence above which the published analysis expects MMM to pay off


def calibrate_thresholds(
    activations: Mapping[str, torch.Tensor], sparsity: float = PUBLISHED_SPARSITY
) -> dict[str, float]:
    """Per projection name, the threshold of its activations (tokens × features) for ``sparsity``: the sparse
    GEMV's :func:`~kernels.sparse_gemv.reference.threshold_for` of ``|x|``."""
    return {name: threshold_for(x.abs(), sparsity) for name, x in activations.items()}


def binarize(activations: torch.Tensor, threshold: float) -> torch.Tensor:
    """The binary matrix (features × tokens, bool) of ``activations`` (tokens × features): ``|x| > threshold``,
    compared in fp32 or wider, as :func:`kernels.sparse_gemv.reference.sparsify` does."""
    x = activations.reshape(-1, activations.shape[-1])
    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
    return (wide.abs() > float(np.float32(threshold))).T.contiguous()  # (F, T)


def hamming_to(binary: torch.Tensor, reference: int) -> torch.Tensor:
    """``d(f, reference)`` for every feature ``f`` (fp64, fraction of tokens)."""
    return (binary ^ binary[reference]).double().mean(1)


def hamming_matrix(binary: torch.Tensor) -> torch.Tensor:
    """``d(f, g)`` for every pair (F × F, fp64): ``(|B_f| + |B_g| − 2 B_f·B_g) / T``."""
    b = binary.double()
    ones = b.sum(1)
    return (ones[:, None] + ones[None, :] - 2 * b @ b.T) / binary.shape[1]


def hamming_order(binary: torch.Tensor, reference: int) -> torch.Tensor:
    """Feature indices sorted by Hamming distance to ``reference`` (nearest first, ties by index)."""
    return torch.sort(hamming_to(binary, reference), stable=True).indices


def nearest_features(binary: torch.Tensor, reference: int, count: int = PUBLISHED_FEATURES) -> torch.Tensor:
    """The ``count`` features nearest ``reference`` (all when fewer), the reference first."""
    order = hamming_order(binary, reference)
    order = torch.cat([torch.tensor([reference]), order[order != reference]])
    return order[:count]


def pair_distances(binary: torch.Tensor) -> np.ndarray:
    """``d(f, g)`` over the pairs ``f < g``: the Hamming-distance distribution of a set of features."""
    d = hamming_matrix(binary).numpy()
    return d[np.triu_indices(d.shape[0], k=1)]


@dataclass(frozen=True)
class Clustering:
    """k-means of the features ``features`` (indices into the binary matrix)."""

    k: int
    seed: int
    features: np.ndarray  # (n,) the clustered features
    labels: np.ndarray  # (n,) cluster of each
    sizes: list[int]  # features per cluster
    within: float  # mean d over pairs in one cluster (NaN when no cluster has two features)
    between: float  # mean d over pairs in different clusters
    separation: float  # between / within
    cluster_within: list[float]  # per cluster: mean d over its pairs (NaN for a single feature)
    cluster_between: list[float]  # per cluster: mean d from its features to the other clusters'


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def cluster_features(
    binary: torch.Tensor,
    reference: int,
    k: int,
    count: int = PUBLISHED_FEATURES,
    seed: int = 0,
    n_init: int = 10,
) -> Clustering:
    """k-means (k clusters, ``random_state=seed``, ``n_init`` restarts) of the ``count`` features nearest
    ``reference``, with the within/between Hamming statistics (see the module's docstring)."""
    from sklearn.cluster import KMeans

    features = nearest_features(binary, reference, count)
    if k > len(features):
        raise ValueError(f"k={k} clusters of {len(features)} features: k must be at most the features")
    rows = binary[features]
    labels = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit_predict(rows.double().numpy())
    d = hamming_matrix(rows).numpy()
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    within, between = _mean(d[same & upper]), _mean(d[~same & upper])
    cluster_within, cluster_between = [], []
    for c in range(k):
        inside = labels == c
        block = d[np.ix_(inside, inside)]
        cluster_within.append(_mean(block[np.triu_indices(block.shape[0], k=1)]))
        cluster_between.append(_mean(d[np.ix_(inside, ~inside)]))
    return Clustering(
        k=k,
        seed=seed,
        features=features.numpy(),
        labels=labels,
        sizes=[int((labels == c).sum()) for c in range(k)],
        within=within,
        between=between,
        separation=between / within if within > 0 else float("nan"),
        cluster_within=cluster_within,
        cluster_between=cluster_between,
    )


def cluster_rows(clustering: Clustering) -> list[dict]:
    """One row per cluster: k, seed, cluster, size, within_mean, between_mean (the cluster's), and the clustering's
    within_all, between_all, separation."""
    return [
        {
            "k": clustering.k,
            "seed": clustering.seed,
            "cluster": c,
            "size": clustering.sizes[c],
            "within_mean": clustering.cluster_within[c],
            "between_mean": clustering.cluster_between[c],
            "within_all": clustering.within,
            "between_all": clustering.between,
            "separation": clustering.separation,
        }
        for c in range(clustering.k)
    ]


def tsne(
    binary: torch.Tensor, seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000, method: str = "exact"
) -> np.ndarray:
    """scikit-learn's t-SNE of the features (rows of ``binary``) into 2-D (F × 2), ``random_state=seed``, PCA
    initialisation, ``max_iter`` iterations (at least 250); the perplexity is capped below the number of
    features, as t-SNE requires. ``method="exact"`` (O(F²)) suits the published 128 features; ``"barnes_hut"``
    is for thousands."""
    from sklearn.manifold import TSNE

    n = binary.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE of {n} features: needs at least 3")
    rows = binary.double().numpy()
    perplexity = min(perplexity, n - 1.0)
    model = TSNE(perplexity=perplexity, max_iter=max_iter, random_state=seed, init="pca", method=method)
    return model.fit_transform(rows)


def mmm_coherence(binary: torch.Tensor, block_size: int, order: torch.Tensor | None = None) -> float:
    """The fraction of (block, token) pairs in which every feature of the block is 0: features in ``order``
    (default: by index) cut into consecutive blocks of ``block_size``, the last holding the remainder."""
    if block_size < 1:
        raise ValueError(f"block_size {block_size}: at least 1")
    rows = binary if order is None else binary[order]
    features, tokens = rows.shape
    if features == 0 or tokens == 0:
        return float("nan")
    blocks = -(-features // block_size)
    padded = torch.zeros(blocks * block_size, tokens, dtype=torch.bool)  # padding is 0: never breaks a block
    padded[:features] = rows
    silent = ~padded.reshape(blocks, block_size, tokens).any(1)  # (blocks, T)
    return float(silent.double().mean())


def hamming_histogram(distances: np.ndarray, bins: int = 50) -> list[dict]:
    """The distribution of Hamming distances (fractions of tokens) as rows: bin_lo, bin_hi, pairs, over
    ``bins`` equal bins of [0, 1] (the last closed)."""
    counts, edges = np.histogram(np.asarray(distances), bins=bins, range=(0.0, 1.0))
    return [{"bin_lo": float(edges[i]), "bin_hi": float(edges[i + 1]), "pairs": int(counts[i])} for i in range(bins)]


def mmm_row(binary: torch.Tensor, block_size: int, order: torch.Tensor | None = None, ordering: str = "index") -> dict:
    """One row of the ``mmm_coherence`` table: block_size, ordering (what ``order`` is: ``index`` when None),
    features, tokens, coherence and pays_off (coherence > :data:`MMM_PAYS_OFF`)."""
    coherence = mmm_coherence(binary, block_size, order)
    return {
        "block_size": block_size,
        "ordering": ordering,
        "features": binary.shape[0],
        "tokens": binary.shape[1],
        "coherence": coherence,
        "pays_off": coherence > MMM_PAYS_OFF,
    }
