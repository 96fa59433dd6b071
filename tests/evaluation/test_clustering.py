"""AMI and NMI of a clustering of embeddings: scikit-learn's definitions, by hand too."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from wildid.evaluation.clustering import cluster_embeddings, clustering_scores, label_agreement


def test_nmi_by_hand_and_ami_against_scikit_learn() -> None:
    truth, found = ["a", "a", "b", "b"], [0, 0, 0, 1]
    ami, nmi = label_agreement(truth, found)
    # p(truth) = (1/2, 1/2); p(found) = (3/4, 1/4); p(a,0) = 1/2, p(b,0) = 1/4, p(b,1) = 1/4
    h_truth = math.log(2)
    h_found = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75))
    mi += 0.25 * math.log(0.25 / (0.5 * 0.25))
    assert nmi == pytest.approx(mi / ((h_truth + h_found) / 2))  # arithmetic normalisation
    assert nmi == pytest.approx(normalized_mutual_info_score(truth, found))
    assert ami == pytest.approx(adjusted_mutual_info_score(truth, found))
    assert label_agreement(truth, ["x", "x", "y", "y"]) == (1.0, 1.0)  # names do not matter


def _blobs(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three tight groups of unit vectors around three axes of R^8, 5 photos each."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for axis, name in enumerate(("ann", "bob", "cid")):
        centre = np.eye(8)[axis]
        for _ in range(5):
            v = centre + 0.05 * rng.standard_normal(8)
            rows.append(v / np.linalg.norm(v))
            labels.append(name)
    return np.array(rows, dtype=np.float32), labels


def test_separate_individuals_cluster_perfectly() -> None:
    rows, labels = _blobs()
    scores = clustering_scores(rows, labels)
    assert (scores.ami, scores.nmi) == (pytest.approx(1.0), pytest.approx(1.0))
    assert (scores.points, scores.clusters) == (15, 3)


def test_scores_are_scikit_learns_on_the_k_means_clustering() -> None:
    rows, labels = _blobs(1)
    mixed = ["ann", "bob", "cid"] * 5  # labels that cut across the geometry's groups
    found = cluster_embeddings(rows, 3, seed=0)
    scores = clustering_scores(rows, mixed, seed=0)
    assert scores.ami == pytest.approx(adjusted_mutual_info_score(mixed, found))
    assert scores.nmi == pytest.approx(normalized_mutual_info_score(mixed, found))
    assert scores.ami < 0.5


def test_edge_cases() -> None:
    rows, labels = _blobs()
    assert cluster_embeddings(rows[:3], 3).tolist() == [0, 1, 2]  # as many groups as photos
    assert set(cluster_embeddings(rows, 1).tolist()) == {0}
    empty = clustering_scores(np.zeros((0, 8)), [])
    assert math.isnan(empty.ami) and empty.points == 0
    with pytest.raises(ValueError, match="15 embeddings but 2"):
        clustering_scores(rows, ["a", "b"])
