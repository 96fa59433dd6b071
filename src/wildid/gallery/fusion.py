"""Keypoints in a package: `identify` ranks by the calibrated global + local fusion.

A package built with local matching (`wildid package --local`, or a run whose config sets
`fusion.local`) carries the RootSIFT keypoints of every gallery crop
(`gallery/keypoints/<id>.npz`) and `fusion.json`: the local matcher's settings, the
shortlist size, an isotonic calibration per matcher (the global cosine and the local
score) and their weights, and the open-set operating points on the fused probability,
all fitted at packaging time as the nyala benchmark fits them (`wildid.matching.fusion`):

- calibration rows: the run's validation queries against its training photos when it has
  some; else leave-one-sighting-out pseudo-queries on the gallery (each sampled photo
  against the photos of other sightings, known when its individual has another one, and
  against the photos of other individuals, new), as the global calibration does
  (`gallery.package._calibrate`);
- each row's shortlist: its top `fusion.shortlist` photos by cosine (same flank only,
  where both flanks are known), local-matched, both scores calibrated into P(same
  individual), the weights chosen cross-fitted (`choose_weights`), and the MAP@5- and
  gmean-optimal thresholds chosen on the fused ranking.

Identify then shortlists each photo's gallery by cosine, matches the photo's keypoints
(found on its crop, as the gallery's were on theirs) against the shortlist, and ranks the
individuals by their best photo's fused probability (`LocalFusion.fused`). Enrolling a
photo adds its keypoints (`enrolled/keypoints/<sha256>.npz`), so the catalogue grows
without retraining here too. Keypoints are stored as float32 positions and uint8
descriptors (RootSIFT components in [0, 1] times 255: a quarter of float32's bytes, and
the rounding moves a descriptor by about 0.01 of the 0.3-0.5 distances that tell a match).
Only arrays (npz, no pickles) and JSON.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.infer.openset import choose_operating_points
from wildid.matching.base import PAD, PooledMatcher, PrecomputedMatcher, Shortlist
from wildid.matching.calibration import IsotonicCalibration
from wildid.matching.fusion import (
    CalibratedFusion,
    LocalMatcher,
    PairCache,
    choose_weights,
    fuse_probabilities,
    rank_shortlist,
    same_pairs,
)
from wildid.matching.local import Features, LocalConfig, extract

FUSION = "fusion.json"
KEYPOINTS = "gallery/keypoints"  # <photo id>.npz in the package
ENROLLED_KEYPOINTS = "enrolled/keypoints"  # <sha256>.npz in the package directory
MATCHERS = ("global", "local")


def _desc_bytes(desc: np.ndarray) -> np.ndarray:
    """RootSIFT descriptors (components in [0, 1]) as uint8 255ths."""
    return np.clip(np.rint(np.asarray(desc, np.float32) * 255.0), 0, 255).astype(np.uint8)


def quantised(features: Features) -> Features:
    """Keypoints as a package stores them: descriptors rounded to 1/255."""
    desc = _desc_bytes(features.desc).astype(np.float32) / 255.0
    return Features(np.asarray(features.xy, np.float32), desc)


def pack_features(features: Features) -> bytes:
    """An npz of a crop's keypoints: xy float32 (N, 2), desc uint8 (N, 128)."""
    buffer = io.BytesIO()
    np.savez(buffer, xy=np.asarray(features.xy, np.float32), desc=_desc_bytes(features.desc))
    return buffer.getvalue()


def read_features(path: str | Path) -> Features:
    """A crop's keypoints from `pack_features`'s npz (ValueError for one needing pickle)."""
    with np.load(path, allow_pickle=False) as data:
        xy, desc = data["xy"], data["desc"]
    if xy.ndim != 2 or xy.shape[1:] != (2,) or desc.shape != (len(xy), 128):
        raise ValueError(f"{path}: keypoints of shape {xy.shape} and {desc.shape}")
    return Features(xy.astype(np.float32), desc.astype(np.float32) / 255.0)


def crop_features(crop_bgr: np.ndarray, config: LocalConfig) -> Features:
    """Keypoints of a crop on the animal (the GrabCut foreground seeded by a centred
    rectangle, as the pipeline's fused method finds them on its cached crops), rounded as
    stored, so a query meets the gallery alike."""
    return quantised(extract(crop_bgr, None, config))


@dataclass(frozen=True)
class LocalFusion:
    """What `fusion.json` holds: how to match, and how to turn two scores into one."""

    local: LocalConfig
    shortlist: int
    calibrations: dict[str, IsotonicCalibration]  # by matcher: global, local
    weights: tuple[float, float]  # global, local
    operating_points: dict[str, float] | None  # map5, gmean: on the fused probability
    source: str  # validation or leave-one-out
    rows: int  # calibration rows
    pool: str = "max"  # an individual's local score: its best photo's, or their sum

    def fused(self, cosine: np.ndarray, local: np.ndarray) -> np.ndarray:
        """P(same individual) from a pair's cosine and local score (NaN where unscored)."""
        return fuse_probabilities(
            [self.calibrations["global"](cosine), self.calibrations["local"](local)],
            self.weights,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "local": asdict(self.local),
            "shortlist": self.shortlist,
            "calibrations": {n: c.to_json() for n, c in self.calibrations.items()},
            "weights": list(self.weights),
            "operating_points": self.operating_points,
            "source": self.source,
            "rows": self.rows,
            "pool": self.pool,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalFusion:
        weights = tuple(float(w) for w in data["weights"])
        if len(weights) != len(MATCHERS) or not sum(weights) > 0:
            raise ValueError(f"fusion weights {list(weights)}: expected two, not all zero")
        return cls(
            LocalConfig(**data["local"]),
            int(data["shortlist"]),
            {n: IsotonicCalibration.from_json(data["calibrations"][n]) for n in MATCHERS},
            weights,  # type: ignore[arg-type]
            data.get("operating_points"),
            str(data.get("source", "")),
            int(data.get("rows", 0)),
            str(data.get("pool", "max")),
        )


def load_fusion(root: Path) -> LocalFusion | None:
    """The package directory's fusion.json, or None for a package without keypoints."""
    path = root / FUSION
    return LocalFusion.from_json(json.loads(path.read_text())) if path.is_file() else None


def calibration_rows(
    labels: np.ndarray,
    groups: np.ndarray,
    roles: np.ndarray | None,
    truths: np.ndarray | None,
    sample: int,
) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """(query photo indices, (rows, photos) allowed mask, truths, source) to fit on:
    validation queries against training photos, or leave-one-sighting-out pairs."""
    n = len(labels)
    if roles is not None and truths is not None and (roles == "val").any():
        fit = roles == "train"
        if fit.any():
            queries = np.flatnonzero(roles == "val")
            allowed = np.broadcast_to(fit, (len(queries), n)).copy()
            return queries, allowed, [str(truths[q]) for q in queries], "validation"
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    sightings: dict[str, set[str]] = {}
    for label, group in zip(labels, groups, strict=True):
        sightings.setdefault(label, set()).add(group)
    other_sighting = groups[None, :] != groups[picked][:, None]
    other_individual = labels[None, :] != labels[picked][:, None]
    known = [len(sightings[labels[q]]) > 1 for q in picked]
    rows = np.concatenate([picked, picked])
    allowed = np.concatenate([other_sighting, other_individual])
    row_truths = [
        str(labels[q]) if k else NEW_INDIVIDUAL for q, k in zip(picked, known, strict=True)
    ]
    return rows, allowed, row_truths + [NEW_INDIVIDUAL] * len(picked), "leave-one-out"


def fit_fusion(
    cosine: np.ndarray,
    names: Sequence[str],
    labels: np.ndarray,
    features: Sequence[Features],
    queries: np.ndarray,
    allowed: np.ndarray,
    truths: Sequence[str],
    source: str,
    local: LocalConfig,
    shortlist: int,
    workers: int = 1,
    progress: bool = True,
    pool: str = "max",
) -> LocalFusion:
    """Calibrate the cosine and the local score on the rows `queries` (photo indices,
    each allowed to see the photos `allowed` marks), choose their weights and the
    operating points on the fused probability. `cosine` is (rows, photos): each row's
    photo against every gallery photo. `pool`: an individual's local score is its best
    photo's ("max") or the sum over its shortlisted photos ("sum", `PooledMatcher`)."""
    names = [str(n) for n in names]
    listed = Shortlist.top(np.where(allowed, cosine, -np.inf), shortlist)
    row_names = [names[q] for q in queries]
    pairs = PairCache(dict(zip(names, features, strict=True)), local, workers, progress)
    fusion = CalibratedFusion(
        [
            PrecomputedMatcher(cosine, row_names, names, "global"),
            PooledMatcher(
                LocalMatcher(pairs, "none"),
                dict(zip(names, (str(v) for v in labels), strict=True)),
                pool,
            ),
        ]
    )
    scored = fusion.score(row_names, names, listed)
    same = same_pairs(listed, labels, truths)
    fitted = fusion.fit(scored, same, source)
    fitted = fitted.with_weights(choose_weights(fusion, scored, same, labels, truths))
    ranking = rank_shortlist(listed, fitted.calibrate(scored).fused, labels)
    points = choose_operating_points(ranking, list(truths))
    return LocalFusion(
        local,
        shortlist,
        fitted.calibrations,
        tuple(float(w) for w in fitted.weights),  # type: ignore[arg-type]
        {"map5": points.map5, "gmean": points.gmean},
        source,
        int((listed.columns != PAD).any(axis=1).sum()),
        pool,
    )
