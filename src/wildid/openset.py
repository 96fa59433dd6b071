"""Open set: decide where `new_individual` goes in each query's top 5.

`new_individual` is inserted just before the first candidate whose similarity is below
the threshold, so a query whose best match is weak predicts "new" first, and one with a
strong match predicts "new" only after its confident candidates. The threshold is tuned
on validation queries, some of whose individuals were held out of training entirely.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.metrics import map_at_k
from wildid.retrieval import Ranking

K = 5


def insert_new(
    labels: Sequence[str],
    scores: Sequence[float],
    threshold: float | None,
    fillers: Sequence[str] = (),
    k: int = K,
) -> list[str]:
    """Top-k labels with `new_individual` placed where the scores drop below threshold.

    With threshold None, `new_individual` is never inserted (closed set). Short lists are
    padded with `new_individual` and then `fillers` (e.g. the commonest individuals).
    """
    out: list[str] = []
    for label, score in zip(labels, scores, strict=True):
        if threshold is not None and score < threshold and NEW_INDIVIDUAL not in out:
            out.append(NEW_INDIVIDUAL)
        if len(out) >= k:
            break
        out.append(label)
    for label in (NEW_INDIVIDUAL, *fillers):
        if len(out) >= k:
            break
        if label not in out:
            out.append(label)
    return out[:k]


def predict(ranking: Ranking, threshold: float | None, fillers: Sequence[str] = ()) -> list[list[str]]:
    return [insert_new(l, s, threshold, fillers) for l, s in zip(ranking.labels, ranking.scores, strict=True)]


def tune_threshold(
    ranking: Ranking, truths: Sequence[str], grid: Sequence[float]
) -> tuple[float, list[tuple[float, float]]]:
    """The threshold with the best MAP@5 on validation, and the whole curve.

    Ties go to the lower threshold, which predicts `new_individual` less often.
    """
    curve = [(float(t), map_at_k(predict(ranking, t), truths)) for t in sorted(grid)]
    best = max(curve, key=lambda item: (item[1], -item[0]))
    return best[0], curve


def top1_scores(ranking: Ranking) -> np.ndarray:
    return np.array([s[0] if s else -1.0 for s in ranking.scores])
