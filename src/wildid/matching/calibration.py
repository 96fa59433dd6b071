"""Score calibration: any matcher's raw score becomes P(same individual).

Matchers score on unrelated scales (a cosine in [-1, 1], an inlier count from 0 up), so
they cannot be averaged or thresholded together as they are. WildFusion (Cermak et al.
2024, wildlife-tools) calibrates each matcher on labelled pairs, isotonic regression of
"same individual or not" on the score, and averages the calibrated scores; here too.

Isotonic regression gives a step function: every score in a step maps to one probability,
which would tie candidates a matcher tells apart. So the fitted steps are joined by
straight lines through their midpoints (`IsotonicCalibration.knots`) and a tiny, bounded
increasing term (under SLOPE in all) keeps the map strictly increasing: the ranking of one
matcher's scores never changes, only their scale. Outside the fitted range the end
probabilities hold (plus that term).

Fitted on held-out pairs only (`fit_isotonic`): pairs of a model's own training photos
have inflated scores and would make every probability too high. Stored as two short
lists of floats (JSON), never a pickled estimator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wildid.errors import WildidError

SLOPE = 1e-9  # the tie-break's whole range: strictly increasing, far below any step


class CalibrationError(WildidError, ValueError):
    """A calibration cannot be fitted or read (no pairs of one kind, a bad file)."""


@dataclass(frozen=True)
class IsotonicCalibration:
    """Monotone map from a matcher's score to P(same individual).

    knots: increasing scores; values: the probability at each knot (non-decreasing); in
    between, linear; beyond the ends, the end values. pairs and positives: how many
    labelled pairs, and same-individual pairs among them, it was fitted on.
    """

    knots: tuple[float, ...]
    values: tuple[float, ...]
    source: str = "held-out pairs"
    pairs: int = 0
    positives: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.knots) != len(self.values) or not self.knots:
            raise CalibrationError(
                f"calibration has {len(self.knots)} knots and {len(self.values)} values; "
                "expected the same number, at least one."
            )
        if any(b < a for a, b in zip(self.knots, self.knots[1:], strict=False)) or any(
            b < a for a, b in zip(self.values, self.values[1:], strict=False)
        ):
            raise CalibrationError("calibration knots and values must be non-decreasing.")
        if not all(math.isfinite(v) for v in (*self.knots, *self.values)):
            raise CalibrationError("calibration knots and values must be finite.")

    def __call__(self, scores: np.ndarray | float) -> np.ndarray:
        """P(same) of each score (NaN and -inf, pairs not scored, stay NaN / -inf)."""
        x = np.asarray(scores, dtype=np.float64)
        finite = np.isfinite(x)
        safe = np.where(finite, x, self.knots[0])
        span = max(self.knots[-1] - self.knots[0], 1e-12)
        tie_break = SLOPE * (np.arctan((safe - self.knots[0]) / span) / np.pi + 0.5)
        return np.where(finite, np.interp(safe, self.knots, self.values) + tie_break, x)

    def probability(self, scores: np.ndarray | float) -> np.ndarray:
        """P(same) of each score; unscored (non-finite) scores get 0."""
        p = self(scores)
        return np.where(np.isfinite(p), p, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "isotonic",
            "knots": list(self.knots),
            "values": list(self.values),
            "source": self.source,
            "pairs": self.pairs,
            "positives": self.positives,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IsotonicCalibration:
        if data.get("method") != "isotonic":
            raise CalibrationError(f"not an isotonic calibration: method {data.get('method')!r}")
        try:
            return cls(
                tuple(float(v) for v in data["knots"]),
                tuple(float(v) for v in data["values"]),
                str(data.get("source", "")),
                int(data.get("pairs", 0)),
                int(data.get("positives", 0)),
                dict(data.get("extra", {})),
            )
        except (KeyError, TypeError) as err:
            raise CalibrationError(f"bad isotonic calibration: {err!r}") from None


def fit_isotonic(
    scores: np.ndarray | Sequence[float],
    same: np.ndarray | Sequence[bool],
    source: str = "held-out pairs",
    max_knots: int = 64,
) -> IsotonicCalibration:
    """Isotonic regression of `same` on `scores` (finite scores only), as knots.

    Each fitted step becomes one knot at its score midpoint (at most `max_knots`, merged
    by quantile of the pairs), so the map is piecewise linear and, with SLOPE, strictly
    increasing. Needs at least one same and one different pair (CalibrationError).
    """
    from sklearn.isotonic import IsotonicRegression

    x = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(same, dtype=bool).reshape(-1)
    if x.shape != y.shape:
        raise CalibrationError(f"{len(x)} scores but {len(y)} labels.")
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise CalibrationError(
            f"cannot calibrate on {len(y)} pairs with {positives} of the same individual: "
            "need both kinds (more calibration queries, or individuals with two sightings)."
        )
    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    fitted = model.fit(x, y.astype(np.float64)).predict(x)
    order = np.argsort(x, kind="stable")
    xs, ps = x[order], fitted[order]
    # one knot per step (run of equal fitted values), at the middle of its scores
    starts = np.flatnonzero(np.r_[True, np.diff(ps) != 0])
    stops = np.r_[starts[1:], len(ps)]
    if len(starts) > max_knots:  # merge steps: quantiles of the pairs
        edges = np.unique(np.quantile(np.arange(len(starts)), np.linspace(0, 1, max_knots + 1)))
        edges = np.unique(np.round(edges).astype(int))
        groups = list(zip(edges[:-1], np.r_[edges[1:-1], len(starts)], strict=True))
        starts_m = np.array([starts[a] for a, _ in groups])
        stops_m = np.array([stops[b - 1] for _, b in groups])
        starts, stops = starts_m, stops_m
    knots = [(xs[a] + xs[b - 1]) / 2 for a, b in zip(starts, stops, strict=True)]
    values = [float(ps[a:b].mean()) for a, b in zip(starts, stops, strict=True)]
    values = list(np.maximum.accumulate(values))  # merging keeps the order; guard rounding
    return IsotonicCalibration(
        tuple(float(k) for k in knots),
        tuple(float(v) for v in values),
        source,
        int(len(y)),
        positives,
    )


def uncalibrated(scores: np.ndarray | Sequence[float], reason: str) -> IsotonicCalibration:
    """A stand-in where no calibration can be fitted: the scores' range mapped linearly
    onto [0, 1] (rank-preserving, not a probability), its source saying why."""
    x = np.asarray(scores, dtype=np.float64)
    x = x[np.isfinite(x)]
    lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return IsotonicCalibration((lo, hi), (0.0, 1.0), f"uncalibrated: {reason}", int(len(x)), 0)
