"""Tests for isotonic calibration: monotone, strictly increasing, fitted on held-out
pairs it maps same-individual pairs above different ones, and it travels as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wildid.matching.calibration import (
    CalibrationError,
    IsotonicCalibration,
    fit_isotonic,
    uncalibrated,
)


def _pairs(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Scores of same pairs around 0.6, different pairs around 0.3 (overlapping)."""
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.2
    scores = np.where(same, rng.normal(0.6, 0.12, n), rng.normal(0.3, 0.12, n))
    return scores, same


def test_calibration_is_strictly_increasing_and_separates_held_out_pairs() -> None:
    scores, same = _pairs(0)
    calibration = fit_isotonic(scores, same)
    grid = np.linspace(-1.0, 2.0, 500)
    p = calibration(grid)
    assert (np.diff(p) > 0).all()  # strictly: no two scores tie after calibration
    assert p.min() >= 0.0 and p.max() <= 1.0 + 1e-6
    held_scores, held_same = _pairs(1)  # pairs it was not fitted on
    p_same, p_other = calibration(held_scores[held_same]), calibration(held_scores[~held_same])
    assert p_same.mean() > 0.5 > p_other.mean()
    # calibrated: among held-out pairs given about 0.8, about 80% are the same individual
    band = (calibration(held_scores) > 0.7) & (calibration(held_scores) < 0.9)
    assert held_same[band].mean() == pytest.approx(0.8, abs=0.15)
    assert calibration.pairs == len(scores) and calibration.positives == int(same.sum())


def test_ranking_of_one_matcher_is_unchanged_and_unscored_pairs_stay_unscored() -> None:
    scores, same = _pairs(2)
    calibration = fit_isotonic(scores, same, max_knots=8)
    assert len(calibration.knots) <= 8
    row = np.array([0.1, 0.45, 0.44, 0.9, np.nan, -np.inf])
    p = calibration(row)
    assert (np.argsort(-p[:4]) == np.argsort(-row[:4])).all()
    assert np.isnan(p[4]) and np.isneginf(p[5])


def test_calibration_round_trips_through_json_and_refuses_bad_input() -> None:
    calibration = fit_isotonic(*_pairs(3), source="test")
    again = IsotonicCalibration.from_json(json.loads(json.dumps(calibration.to_json())))
    assert again == calibration
    x = np.linspace(0, 1, 11)
    assert np.array_equal(again(x), calibration(x))
    with pytest.raises(CalibrationError, match="both kinds"):
        fit_isotonic([0.1, 0.2], [True, True])
    with pytest.raises(CalibrationError, match="non-decreasing"):
        IsotonicCalibration((0.0, 1.0), (0.8, 0.2))
    with pytest.raises(CalibrationError, match="isotonic"):
        IsotonicCalibration.from_json({"method": "logistic"})
    stand_in = uncalibrated(np.array([2.0, 4.0]), "why")
    assert stand_in(np.array([2.0, 3.0, 4.0])).tolist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)
