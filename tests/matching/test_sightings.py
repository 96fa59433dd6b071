"""Tests for per-sighting pooling: a sighting's photos vote with one pooled score row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wildid.evaluation.protocols import Calibration
from wildid.matching.sightings import (
    one_individual_per_sighting,
    pool_by_sighting,
    pool_calibration,
)

NEG = -np.inf


def test_photos_of_a_sighting_vote_by_the_mean_of_each_individuals_best() -> None:
    # gallery: b, a, a, b; rows 0 and 1 are one sighting's left and right photos
    ids = np.array(["b", "a", "a", "b"])
    scores = np.array(
        [
            [0.2, 0.9, 0.3, 0.1],  # left: a at best 0.9, b at best 0.2
            [0.6, 0.1, 0.0, 0.4],  # right: a at best 0.1, b at best 0.6
            [0.0, 0.2, 0.3, 0.8],  # another sighting alone: a 0.3, b 0.8
        ],
        dtype=np.float32,
    )
    pooled, individuals = pool_by_sighting(scores, ids, np.array(["7", "7", "8"]))
    assert individuals.tolist() == ["a", "b"]
    # (0.9 + 0.1) / 2 = 0.5 for a, (0.2 + 0.6) / 2 = 0.4 for b: the mean of bests, not
    # the best of all (a 0.9) nor the mean of all scores
    assert pooled[0].tolist() == pytest.approx([0.5, 0.4])
    assert pooled[1].tolist() == pytest.approx([0.5, 0.4])
    assert pooled[2].tolist() == pytest.approx([0.3, 0.8])  # alone: its own bests


def test_an_individual_a_photo_did_not_see_counts_as_its_worst_best() -> None:
    ids = np.array(["a", "b", "c"])
    scores = np.array(
        [
            [0.9, 0.5, NEG],  # left: never compared with c (another flank)
            [NEG, 0.2, 0.8],  # right: never compared with a
            [NEG, NEG, NEG],  # a photo compared with nothing
        ],
        dtype=np.float32,
    )
    pooled, _ = pool_by_sighting(scores, ids, np.array(["1", "1", "2"]))
    # c missing on the left counts as the left's worst best (0.5); a on the right as 0.2
    assert pooled[0].tolist() == pytest.approx([(0.9 + 0.2) / 2, (0.5 + 0.2) / 2, (0.5 + 0.8) / 2])
    assert pooled[2].tolist() == [0.0, 0.0, 0.0]
    assert np.isfinite(pooled).all()


def test_pool_calibration_drops_each_rows_own_sighting_before_pooling() -> None:
    ids = np.array(["a", "a", "a", "b", "b"])
    groups = np.array(["1", "1", "4", "2", "3"])  # each gallery photo's sighting
    # pseudo-queries: gallery photos 0 and 1, both of a's sighting 1 (own-sighting masked)
    scores = np.array([[1.0, 1.0, 0.7, 0.3, 0.2], [1.0, 1.0, 0.5, 0.1, 0.6]], dtype=np.float32)
    own = np.array([[False, False, True, True, True]] * 2)
    cal = Calibration(np.array([0, 1]), ["a", "a"], own)
    pooled, individuals, pooled_cal = pool_calibration(scores, ids, cal, groups)
    assert individuals.tolist() == ["a", "b"]
    # a's own-sighting photos (1.0) are dropped: a = mean(0.7, 0.5), b = mean(0.3, 0.6)
    assert np.allclose(pooled, [[0.6, 0.45], [0.6, 0.45]])
    assert pooled_cal.rows.tolist() == [0, 1] and pooled_cal.truths == cal.truths
    assert pooled_cal.mask.shape == (2, 2) and pooled_cal.mask.all()


def test_one_individual_per_sighting() -> None:
    table = pd.DataFrame({"group": ["1", "1", "2"], "individual_id": ["a", "a", "b"]})
    assert one_individual_per_sighting(table)
    table.loc[2, "group"] = "1"
    assert not one_individual_per_sighting(table)
