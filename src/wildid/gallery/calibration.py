"""Score calibration: a similarity becomes the probability that a candidate is the animal.

A cosine similarity means little to a person (is 0.62 good?), so the package carries a
calibration fitted at packaging time on labelled pairs: isotonic regression
(`wildid.matching.calibration.IsotonicCalibration`, as the benchmark's calibrated fusion
uses) in packages built now, a logistic regression p = sigmoid(a * score + b) in older
ones (`load_calibration` reads either). The pairs: every one of the top-k candidates of
each validation query (the run's split.csv), labelled same individual or not. All top-k
candidates, not only top-1, because the probability is shown beside every candidate. A
run without validation queries (nyala's config trains on every gallery photo) is
calibrated leave-one-sighting-out on the gallery itself: each photo queried against the
photos of other sightings (of itself when the data has none); its probabilities are then
too high (the model trained on those pairs). Where no fit is possible (one class only),
DEFAULT stands in (p = 0.5 at cosine 0.5), marked `default`. Only floats are stored
(JSON), never a fitted estimator (a pickle).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wildid.matching.calibration import CalibrationError, IsotonicCalibration, fit_isotonic


@dataclass(frozen=True)
class Calibration:
    """p(same | score) = 1 / (1 + exp(-(coef * score + intercept)))."""

    coef: float
    intercept: float
    source: str  # validation, leave-one-out, or default
    pairs: int = 0
    positives: int = 0

    def probability(self, scores: np.ndarray | float) -> np.ndarray:
        z = self.coef * np.asarray(scores, dtype=np.float64) + self.intercept
        z = np.where(np.isfinite(z), z, -50.0)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))

    def to_json(self) -> dict[str, Any]:
        return {"method": "logistic", **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        values = {k: data[k] for k in ("coef", "intercept", "source", "pairs", "positives")}
        if not all(math.isfinite(float(values[k])) for k in ("coef", "intercept")):
            raise ValueError("calibration coefficients are not finite")
        return cls(
            float(values["coef"]),
            float(values["intercept"]),
            str(values["source"]),
            int(values["pairs"]),
            int(values["positives"]),
        )


DEFAULT = Calibration(coef=10.0, intercept=-5.0, source="default")  # p = 0.5 at cosine 0.5


def load_calibration(data: dict[str, Any]) -> Calibration | IsotonicCalibration:
    """A package's calibration.json: isotonic (packages built now) or logistic (older)."""
    if data.get("method") == "isotonic":
        return IsotonicCalibration.from_json(data)
    return Calibration.from_json(data)


def fit_probability(
    scores: np.ndarray, same: np.ndarray, source: str
) -> Calibration | IsotonicCalibration:
    """An isotonic fit of same-or-not on scores; DEFAULT (logistic) when one class is
    missing, so a package always has a calibration."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    same = np.asarray(same, dtype=bool).reshape(-1)
    try:
        return fit_isotonic(scores, same, source)
    except CalibrationError:
        keep = np.isfinite(scores)
        return Calibration(
            DEFAULT.coef, DEFAULT.intercept, "default", int(keep.sum()), int(same[keep].sum())
        )


def fit_calibration(scores: np.ndarray, same: np.ndarray, source: str) -> Calibration:
    """A logistic fit of same-or-not on scores; DEFAULT when one class is missing."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    same = np.asarray(same, dtype=bool).reshape(-1)
    keep = np.isfinite(scores)
    scores, same = scores[keep], same[keep]
    positives = int(same.sum())
    if positives == 0 or positives == len(same):
        return Calibration(DEFAULT.coef, DEFAULT.intercept, "default", len(same), positives)
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=100.0).fit(scores[:, None], same)
    if model.coef_[0, 0] <= 0:  # a higher similarity must never mean a less likely match
        return Calibration(DEFAULT.coef, DEFAULT.intercept, "default", len(same), positives)
    return Calibration(
        float(model.coef_[0, 0]), float(model.intercept_[0]), source, len(same), positives
    )
