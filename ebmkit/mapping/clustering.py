"""Basins as an unsupervised clustering, scored against labels beside k-means.

Each start image belongs to the basin of the minimum it descended into.  On
labelled data the clustering is scored by purity (the share of images whose
label is their cluster's most common one) and the adjusted Rand index
(scikit-learn's; 0 for chance, 1 for the labels' own partition), next to
k-means in pixel space with the same number of clusters.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor


def purity(labels, clusters) -> float:
    """Share of items whose label is the most common label of their cluster."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.shape != clusters.shape or labels.size == 0:
        raise ValueError(f"labels and clusters must be equally long and not empty, got {labels.shape} and {clusters.shape}")
    hits = sum(np.bincount(labels[clusters == c]).max() for c in np.unique(clusters))
    return float(hits) / labels.size


def scores(labels, clusters) -> dict[str, float]:
    """Purity, adjusted Rand index and the number of clusters."""
    from sklearn.metrics import adjusted_rand_score

    return {"clusters": int(len(np.unique(clusters))), "purity": purity(labels, clusters),
            "ari": float(adjusted_rand_score(np.asarray(labels), np.asarray(clusters)))}


def kmeans(x: Tensor, k: int, *, seed: int = 0) -> np.ndarray:
    """k-means cluster of each row of ``x`` (flattened), scikit-learn, 10 restarts."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x.flatten(1).double().cpu().numpy())


def compare_with_kmeans(x: Tensor, labels, clusters, *, seed: int = 0) -> dict[str, dict[str, float]]:
    """Scores of the basins and of k-means (same number of clusters) on ``x``."""
    k = int(len(np.unique(np.asarray(clusters))))
    return {"attraction_diffusion": scores(labels, clusters), "kmeans": scores(labels, kmeans(x, k, seed=seed))}


__all__ = ["compare_with_kmeans", "kmeans", "purity", "scores"]
