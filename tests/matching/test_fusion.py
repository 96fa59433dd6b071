"""Tests for global + local fusion: shortlist, pair cache, fused score and the weight choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.evaluation.protocols import Calibration, Protocol
from wildid.matching import fusion
from wildid.matching.fusion import (
    PairCache,
    choose_weight,
    fuse,
    fusion_weights,
    shortlist,
)
from wildid.matching.local import LocalConfig


def test_shortlist_keeps_the_top_finite_columns_best_first() -> None:
    scores = np.array(
        [[0.1, 0.9, 0.5, 0.9], [-np.inf, 0.3, -np.inf, -np.inf]],
        dtype=np.float32,
    )
    rows = shortlist(scores, 3)
    assert rows[0].tolist() == [1, 3, 2]  # tie at 0.9: the lower column first
    assert rows[1].tolist() == [1]  # pairs not compared (-inf) are never matched
    assert [r.tolist() for r in shortlist(scores, 0)] == [[], []]


def test_fuse_adds_weighted_log_inliers_and_leaves_unmatched_pairs_alone() -> None:
    cos = np.array([[0.5, 0.5, -np.inf]], dtype=np.float32)
    counts = np.array([[-1, 9, -1]], dtype=np.float32)
    fused = fuse(cos, counts, 0.1)
    assert fused[0, 0] == pytest.approx(0.5)  # off the shortlist: cosine alone
    assert fused[0, 1] == pytest.approx(0.5 + 0.1 * np.log(10))
    assert np.isneginf(fused[0, 2])
    assert fuse(cos, counts, 0.0)[0, 1] == pytest.approx(0.5)


def _toy() -> tuple[np.ndarray, np.ndarray, np.ndarray, Calibration]:
    """Row 0 (truth a) needs w > 0.1 / log 51 = 0.025 to lift a over b; row 1 (truth c)
    loses c to d once w > 0.3 / log 51 = 0.076. Of the grid, only 0.05 gets both right."""
    ids = np.array(["a", "b", "c", "d"])
    cos = np.array([[0.8, 0.9, 0.0, 0.0], [0.0, 0.0, 0.9, 0.6]], dtype=np.float32)
    counts = np.array([[50, 0, 0, 0], [0, 0, 0, 50]], dtype=np.float32)
    cal = Calibration(np.array([0, 1]), ["a", "c"], np.ones((2, 4), dtype=bool))
    return cos, counts, ids, cal


def test_choose_weight_picks_the_weight_with_the_best_held_out_map5() -> None:
    cos, counts, ids, cal = _toy()
    assert choose_weight(cos, counts, ids, cal) == 0.05
    # with row 1 alone (row 0 left out), fusion only hurts: no fusion; with row 0 alone,
    # every weight above 0.025 is as good and the smallest of them wins the tie
    assert choose_weight(cos, counts, ids, cal, keep=np.array([False, True])) == 0.0
    assert choose_weight(cos, counts, ids, cal, keep=np.array([True, False])) == 0.05
    assert choose_weight(cos, counts, ids, cal, weights=(0.3, 0.2)) == 0.2  # tie: smaller


def test_choose_weight_ignores_new_rows_and_masked_pairs() -> None:
    cos, counts, ids, cal = _toy()
    new = Calibration(cal.rows, ["a", NEW_INDIVIDUAL], cal.mask)
    assert choose_weight(cos, counts, ids, new) == 0.05  # row 1 no longer votes
    none = Calibration(cal.rows, [NEW_INDIVIDUAL, NEW_INDIVIDUAL], cal.mask)
    assert choose_weight(cos, counts, ids, none) == 0.0
    # row 0's own sighting is b: masked, b cannot beat a and fusion is not needed there
    own = Calibration(cal.rows, cal.truths, np.array([[1, 0, 1, 1], [1, 1, 1, 1]], dtype=bool))
    assert choose_weight(cos, counts, ids, own) == 0.0


def test_closed_fusion_weight_is_chosen_without_closed_queries() -> None:
    """Row 0 needs SIFT (cosine ranks b first), row 1 is hurt by it: which rows may vote
    decides the weight, so leaving out a closed query's row must change the choice."""
    ids = np.array(["a", "b", "c", "d"])
    cal = Calibration(np.array([0, 1]), ["a", "c"], np.ones((2, 4), dtype=bool))
    cos = np.array([[0.8, 0.9, 0.0, 0.0], [0.0, 0.0, 0.9, 0.85]], dtype=np.float32)
    counts = np.array([[50, 0, 0, 0], [0, 0, 0, 50]], dtype=np.float32)
    images = pd.Series(["q0", "q1"])
    protocol = Protocol("open", Path("."), pd.DataFrame(), pd.DataFrame())
    mixed = fusion_weights(cos, counts, ids, cal, images, protocol, None, {"q1"})
    assert mixed["fusion_weight_for_closed"] > 0  # only row 0 votes
    assert mixed["fusion_weight_source"] == "held-out calibration"
    alone = fusion_weights(cos, counts, ids, cal, images, protocol, None, {"q0"})
    assert alone["fusion_weight_for_closed"] == 0.0  # only row 1 votes
    closed = Protocol("closed", Path("."), pd.DataFrame(), pd.DataFrame())
    given = fusion_weights(cos, counts, ids, cal, images, closed, 0.3, ())
    assert given["fusion_weight"] == 0.3 and given["fusion_weight_source"] == "open run"
    assert given["fusion_weight_own_calibration"] == choose_weight(cos, counts, ids, cal)
    assert "fusion_weight_for_closed" not in given
    own = fusion_weights(cos, counts, ids, cal, images, closed, None, ())
    assert own["fusion_weight_source"] == "trained-on calibration (inflated)"


def test_pair_cache_matches_each_pair_once_and_keeps_counts_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[list[int]]] = []

    def fake_match(queries, gallery, candidates, config, workers, progress):
        calls.append([list(c) for c in candidates])
        # inliers: 10 x query feature + gallery feature, so every pair has its own count
        return [
            np.array([10 * q + gallery[g] for g in c])
            for q, c in zip(queries, candidates, strict=True)
        ]

    monkeypatch.setattr(fusion, "match_pairs", fake_match)
    sift = {"q0": 1, "q1": 2, "g0": 0, "g1": 1, "g2": 2}
    file = tmp_path / "pairs.csv"
    cache = PairCache(sift, LocalConfig(), 1, False, file)  # type: ignore[arg-type]
    rows, gallery = pd.Series(["q0", "q1"]), pd.Series(["g0", "g1", "g2"])
    out = cache.matrix(rows, gallery, [np.array([0, 2]), np.array([1])])
    assert out.tolist() == [[10, -1, 12], [-1, 21, -1]]  # -1: not on the shortlist
    assert calls == [[[0, 2], [1]]]
    # an overlapping shortlist matches only the new pair
    assert cache.matrix(rows, gallery, [np.array([2, 1]), np.array([])])[0].tolist() == [
        -1,
        11,
        12,
    ]
    assert calls[-1] == [[1]]
    # a fresh cache on the same file matches nothing
    again = PairCache(sift, LocalConfig(), 1, False, file)  # type: ignore[arg-type]
    n = len(calls)
    assert again.matrix(rows, gallery, [np.array([0, 1, 2]), np.array([1])]).tolist() == [
        [10, 11, 12],
        [-1, 21, -1],
    ]
    assert len(calls) == n
