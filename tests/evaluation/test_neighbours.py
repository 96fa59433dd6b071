"""Image-level retrieval scores against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wildid.evaluation.neighbours import (
    average_precision,
    mean,
    precision_at_k,
    recall_at_k,
    score_neighbours,
)

# rank:            1  2  3  4  5
RELEVANT = np.array(
    [
        [1, 0, 1, 0, 0],  # 2 relevant photos, at ranks 1 and 3
        [0, 0, 0, 1, 0],  # 1 relevant photo, at rank 4
        [0, 0, 0, 0, 0],  # a held-out individual: nothing relevant
        [0, 1, 0, 0, 0],  # 3 relevant in the gallery, only one within the ranks given
    ],
    dtype=bool,
)
N_RELEVANT = [2, 1, 0, 3]


def test_precision_at_k_by_hand() -> None:
    p1, p3, p5 = (precision_at_k(RELEVANT, N_RELEVANT, k) for k in (1, 3, 5))
    assert p1[[0, 1, 3]].tolist() == [1.0, 0.0, 0.0]
    assert p3[[0, 1, 3]] == pytest.approx([2 / 3, 0.0, 1 / 3])
    assert p5[[0, 1, 3]] == pytest.approx([2 / 5, 1 / 5, 1 / 5])
    assert all(math.isnan(p[2]) for p in (p1, p3, p5))  # no relevant photo: undefined
    assert mean(p3) == pytest.approx((2 / 3 + 0 + 1 / 3) / 3)  # NaN skipped


def test_recall_at_k_by_hand() -> None:
    r1, r3, r5 = (recall_at_k(RELEVANT, N_RELEVANT, k) for k in (1, 3, 5))
    assert r1[[0, 1, 3]].tolist() == [1.0, 0.0, 0.0]
    assert r3[[0, 1, 3]].tolist() == [1.0, 0.0, 1.0]
    assert r5[[0, 1, 3]].tolist() == [1.0, 1.0, 1.0]
    assert np.array_equal(r1, precision_at_k(RELEVANT, N_RELEVANT, 1), equal_nan=True)


def test_average_precision_by_hand() -> None:
    ap = average_precision(RELEVANT, N_RELEVANT)
    assert ap[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert ap[1] == pytest.approx(1 / 4)
    assert math.isnan(ap[2])
    assert ap[3] == pytest.approx((1 / 2) / 3)  # the 2 relevant photos beyond count 0
    assert mean(ap) == pytest.approx((5 / 6 + 1 / 4 + 1 / 6) / 3)


def test_bad_k_and_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        precision_at_k(RELEVANT, N_RELEVANT, 0)
    with pytest.raises(ValueError, match="queries, ranks"):
        recall_at_k(np.ones(3, bool), [1, 1, 1], 1)
    assert math.isnan(mean(np.array([np.nan])))


def _unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


@pytest.mark.parametrize("max_cells", [4, 4_000_000])  # one query per block, or all at once
def test_score_neighbours_ranks_by_cosine(max_cells: int) -> None:
    gallery = np.array([_unit(a) for a in (10, 20, 40, 80)], dtype=np.float32)
    labels = ["A", "B", "A", "B"]
    # 0 deg: g0 A, g1 B, g2 A, g3 B; 55 deg: g2 A (15), g3 B (25), g1 B (35), g0 A (45)
    queries = np.array([_unit(0), _unit(55), _unit(30)], dtype=np.float32)
    scores = score_neighbours(
        queries, ["A", "B", "new_individual"], gallery, labels, (1, 3), (1, 5), max_cells=max_cells
    )
    assert scores.nearest[0].tolist() == [0, 1, 2, 3]
    assert scores.nearest[1].tolist() == [2, 3, 1, 0]
    assert scores.n_relevant.tolist() == [2, 2, 0]
    assert scores.precision[1][:2].tolist() == [1.0, 0.0]
    assert scores.precision[3][:2] == pytest.approx([2 / 3, 2 / 3])
    assert scores.recall[1][:2].tolist() == [1.0, 0.0]
    assert scores.recall[5][:2].tolist() == [1.0, 1.0]
    assert scores.average_precision[:2] == pytest.approx([(1 + 2 / 3) / 2, (1 / 2 + 2 / 3) / 2])
    assert math.isnan(scores.average_precision[2]) and math.isnan(scores.precision[1][2])
