"""Image-level retrieval scores: precision@k, recall@k and mAP over nearest gallery photos.

MAP@5 (wildid.evaluation.metrics) ranks *individuals*; the metric-learning literature
(and pytorch-metric-learning's AccuracyCalculator) ranks *photos*: each query's gallery
photos sorted by similarity, a photo relevant when it shows the query's individual. The
scores here take that ranking as a boolean matrix, `relevant[q, r]` True when the r-th
nearest gallery photo of query q is relevant, and `n_relevant[q]`, how many relevant photos
the whole gallery holds (the matrix may be truncated). Per query:

* precision@k: the fraction of the k nearest photos that are relevant (capped by how many
  photos of the individual the gallery has: an individual with 2 photos scores at most 2/k);
* recall@k: 1 when at least one of the k nearest photos is relevant, else 0 (the
  "Recall@K" of deep metric learning; precision@1 and recall@1 are equal);
* average precision: the mean, over the individual's relevant photos, of the precision at
  each one's rank (a relevant photo beyond the matrix counts 0); mAP is its mean.

Queries without a relevant photo (held-out individuals) have none of these: the functions
return NaN for them, and `mean` skips NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _check(relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.ndim != 2:
        raise ValueError(f"relevant must be (queries, ranks), got shape {relevant.shape}.")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    return relevant


def _known(n_relevant: np.ndarray | Sequence[int]) -> np.ndarray:
    return np.asarray(n_relevant) > 0


def precision_at_k(
    relevant: np.ndarray, n_relevant: np.ndarray | Sequence[int], k: int
) -> np.ndarray:
    """Per query: relevant photos among the k nearest, divided by k (NaN: none relevant)."""
    relevant = _check(relevant, k)
    hits = relevant[:, :k].sum(axis=1) / k
    return np.where(_known(n_relevant), hits, np.nan)


def recall_at_k(relevant: np.ndarray, n_relevant: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    """Per query: 1.0 when a relevant photo is among the k nearest (NaN: none relevant)."""
    relevant = _check(relevant, k)
    hit = relevant[:, :k].any(axis=1).astype(float)
    return np.where(_known(n_relevant), hit, np.nan)


def average_precision(relevant: np.ndarray, n_relevant: np.ndarray | Sequence[int]) -> np.ndarray:
    """Per query: mean over its relevant photos of the precision at their ranks."""
    relevant = _check(relevant)
    n = np.asarray(n_relevant, dtype=float)
    ranks = np.arange(1, relevant.shape[1] + 1)
    precision = np.cumsum(relevant, axis=1) / ranks
    total = (precision * relevant).sum(axis=1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def mean(values: np.ndarray) -> float:
    """The mean of the defined (non-NaN) values; NaN when there are none."""
    values = np.asarray(values, dtype=float)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else float("nan")


PRECISION_KS = (1, 3, 5, 10)
RECALL_KS = (1, 5, 10)


@dataclass(frozen=True)
class NeighbourScores:
    """Per-query scores (NaN for queries without a relevant gallery photo) and each
    query's nearest gallery rows, best first."""

    precision: dict[int, np.ndarray]  # k -> (queries,)
    recall: dict[int, np.ndarray]  # k -> (queries,)
    average_precision: np.ndarray  # (queries,)
    n_relevant: np.ndarray  # (queries,) relevant photos in the gallery
    nearest: np.ndarray  # (queries, keep) gallery rows in rank order


def score_neighbours(
    queries: np.ndarray,
    query_labels: Sequence[str],
    gallery: np.ndarray,
    gallery_labels: Sequence[str],
    precision_ks: Sequence[int] = PRECISION_KS,
    recall_ks: Sequence[int] = RECALL_KS,
    keep: int = 50,
    max_cells: int = 4_000_000,
) -> NeighbourScores:
    """Rank the whole gallery for each query by cosine similarity (unit rows: dot
    products; ties keep gallery order) and score each query's ranking.

    Queries go through in blocks of at most `max_cells` similarities, so a Happywhale-size
    gallery (51,033 photos) never needs more than a few hundred MB at once.
    """
    query_labels = np.asarray(query_labels, dtype=object)
    gallery_labels = np.asarray(gallery_labels, dtype=object)
    if len(queries) != len(query_labels) or len(gallery) != len(gallery_labels):
        raise ValueError("one label per embedding row is needed, for queries and gallery.")
    names, inverse = np.unique(
        np.concatenate([gallery_labels, query_labels]).astype(str), return_inverse=True
    )
    gallery_codes, query_codes = inverse[: len(gallery)], inverse[len(gallery) :]
    n_relevant = np.bincount(gallery_codes, minlength=len(names))[query_codes]
    table = np.asarray(gallery, dtype=np.float32)
    n = len(queries)
    precision = {k: np.full(n, np.nan) for k in precision_ks}
    recall = {k: np.full(n, np.nan) for k in recall_ks}
    ap = np.full(n, np.nan)
    nearest = np.zeros((n, min(keep, len(gallery))), dtype=np.int64)
    step = max(1, max_cells // max(len(gallery), 1))
    for start in range(0, n, step):
        stop = min(start + step, n)
        sims = np.asarray(queries[start:stop], dtype=np.float32) @ table.T
        ranked = np.argsort(-sims, axis=1, kind="stable")
        relevant = gallery_codes[ranked] == query_codes[start:stop, None]
        counts = n_relevant[start:stop]
        nearest[start:stop] = ranked[:, : nearest.shape[1]]
        for k in precision_ks:
            precision[k][start:stop] = precision_at_k(relevant, counts, k)
        for k in recall_ks:
            recall[k][start:stop] = recall_at_k(relevant, counts, k)
        ap[start:stop] = average_precision(relevant, counts)
    return NeighbourScores(precision, recall, ap, n_relevant, nearest)
