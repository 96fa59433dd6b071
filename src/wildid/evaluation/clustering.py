"""Embedding quality without a gallery: cluster the embeddings, compare with the individuals.

A good embedding puts each individual's photos in one tight group. Clustering the
embeddings into as many groups as there are individuals (k-means on the unit rows, as
pytorch-metric-learning's AccuracyCalculator does) and comparing the groups with the true
individuals gives two numbers in [0, 1] (scikit-learn's definitions):

* NMI, normalised mutual information (arithmetic normalisation): 1 when the clustering
  is the individuals, but above 0 even for a random clustering into many groups;
* AMI, adjusted mutual information: the same corrected for chance, so a random
  clustering scores about 0 (it can dip below).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClusterScores:
    ami: float
    nmi: float
    points: int  # embeddings clustered
    clusters: int  # k: the number of distinct individuals among them


def label_agreement(truth: Sequence, found: Sequence) -> tuple[float, float]:
    """(AMI, NMI) of a clustering `found` against the true labels."""
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    truth, found = list(truth), list(found)
    return (
        float(adjusted_mutual_info_score(truth, found)),
        float(normalized_mutual_info_score(truth, found)),
    )


def cluster_embeddings(embeddings: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """k-means labels of unit-length rows (k-means++ start, fixed seed: reproducible)."""
    from sklearn.cluster import KMeans

    rows = np.asarray(embeddings, dtype=np.float32)
    if clusters >= len(rows):  # every photo its own group
        return np.arange(len(rows))
    if clusters <= 1:
        return np.zeros(len(rows), dtype=np.int64)
    return KMeans(n_clusters=clusters, n_init=1, random_state=seed).fit_predict(rows)


def clustering_scores(
    embeddings: np.ndarray, individuals: Sequence[str], seed: int = 0
) -> ClusterScores:
    """Cluster `embeddings` into as many groups as `individuals` has, and score the groups."""
    individuals = list(individuals)
    if len(individuals) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(individuals)} individuals.")
    if not individuals:
        return ClusterScores(float("nan"), float("nan"), 0, 0)
    k = len(set(individuals))
    found = cluster_embeddings(embeddings, k, seed)
    ami, nmi = label_agreement(individuals, found)
    return ClusterScores(ami, nmi, len(individuals), k)
