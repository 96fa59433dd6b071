"""Retrieval: nearest gallery images by cosine, grouped into a ranking of individuals.

Search is faiss exact inner product on unit vectors (= cosine). An individual's score
for a query is its best-matching gallery image's similarity, which is what the top
Happywhale solutions used: one good match is strong evidence, while a mean would punish
individuals photographed in many poses.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class Ranking:
    """Per query: candidate individuals, best first, with their similarities."""

    labels: list[list[str]]
    scores: list[list[float]]


def search(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (similarities, indices) of each query among the gallery rows."""
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)
    return index.search(queries, min(k, gallery.shape[0]))


def best_per_individual(
    similarities: np.ndarray, indices: np.ndarray, gallery_labels: np.ndarray
) -> Ranking:
    """Group each query's neighbours by individual, keeping the best similarity of each.

    Ties between individuals keep the order faiss returned them in (nearest first).
    """
    labels_out, scores_out = [], []
    for sims, idx in zip(similarities, indices, strict=True):
        seen: dict[str, float] = {}
        for sim, j in zip(sims, idx, strict=True):
            if j < 0:
                continue
            label = str(gallery_labels[j])
            if label not in seen:
                seen[label] = float(sim)
        labels_out.append(list(seen))
        scores_out.append(list(seen.values()))
    return Ranking(labels_out, scores_out)


def rank_individuals(
    gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray, k: int
) -> Ranking:
    similarities, indices = search(gallery, queries, k)
    return best_per_individual(similarities, indices, np.asarray(gallery_labels))
