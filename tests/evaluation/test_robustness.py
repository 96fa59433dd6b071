"""The open-set operating point is robust to the catalogue: on nyala imported without
sighting ids (GROUP= empty) and on a catalogue of mixed body parts made from it, the
gmean-optimal point, chosen on gallery pseudo-queries only, calls some queries new and
some known, never all or none. Cheap colour features stand in for a model: the point is
the decision's robustness, not the ranking's quality. Skips without the dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.evaluation.protocols import (
    calibration,
    calibration_scores,
    import_protocols,
    query_scores,
    share_weights,
)
from wildid.infer.openset import choose_operating_points, predict
from wildid.matching.base import CosineMatcher, Shortlist
from wildid.matching.fusion import CalibratedFusion, rank_shortlist, same_pairs

ROOT = Path(__file__).resolve().parents[2]
NYALA = ROOT.parent / "shared" / "datasets" / "nyala"
sys.path.insert(0, str(ROOT / "benchmarks"))
import parts_catalogue  # noqa: E402

pytestmark = pytest.mark.skipif(
    not NYALA.is_dir(), reason=f"{NYALA} not found (the nyala dataset; see its README)"
)


def _features(paths: dict[str, str]) -> dict[str, np.ndarray]:
    """A colour histogram and a tiny grey thumbnail per photo, unit length."""
    out = {}
    for image, path in paths.items():
        photo = cv2.imread(path, cv2.IMREAD_COLOR)
        hsv = cv2.cvtColor(photo, cv2.COLOR_BGR2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
        grey = cv2.resize(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), (12, 8)).ravel()
        v = np.concatenate([np.sqrt(hist / max(hist.sum(), 1)), (grey - grey.mean()) / 255])
        out[image] = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def _share_called_new(data: Path, out: Path, group: str) -> tuple[float, int]:
    protocol = import_protocols(data, out, group, follow_links=True)["open"]
    g, q = protocol.gallery, protocol.queries
    features = _features(
        dict(zip(g["image"], g["path"], strict=True))
        | dict(zip(q["image"], q["path"], strict=True))
    )
    cal = calibration(g, 150, 0, min_new=20)
    ids = g["individual_id"].to_numpy()
    fusion = CalibratedFusion([CosineMatcher(features, "global")])
    cal_list = Shortlist.top(calibration_scores(features, protocol, cal), 50)
    rows = g["image"].iloc[cal.rows].tolist()
    scored = fusion.score(rows, g["image"].tolist(), cal_list)
    fitted = fusion.fit(scored, same_pairs(cal_list, ids, cal.truths), "test")
    cal_ranking = rank_shortlist(cal_list, fitted.calibrate(scored).fused, ids)
    points = choose_operating_points(cal_ranking, cal.truths, share_weights(cal.truths, 0.56))
    q_list = Shortlist.top(query_scores(features, protocol), 50)
    fused = fitted(q["image"].tolist(), g["image"].tolist(), q_list)
    ranking = rank_shortlist(q_list, fused.fused, ids)
    called = [row[0] == NEW_INDIVIDUAL for row in predict(ranking, points.gmean)]
    new_individuals = len(
        {ids[r] for r, t in zip(cal.rows, cal.truths, strict=True) if t == NEW_INDIVIDUAL}
    )
    return float(np.mean(called)), new_individuals


def _subset(tmp_path: Path, n: int = 60) -> Path:
    """A catalogue of links to the first n nyala individuals (nothing copied)."""
    root = tmp_path / "subset"
    for folder in sorted(p for p in (NYALA / "train").iterdir() if p.is_dir())[:n]:
        (root / folder.name).parent.mkdir(parents=True, exist_ok=True)
        (root / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    return root


def test_operating_point_without_sighting_ids_calls_some_new_and_some_known(
    tmp_path: Path,
) -> None:
    share, new_individuals = _share_called_new(_subset(tmp_path), tmp_path / "nogroup", "")
    assert new_individuals >= 20  # held out whole: there is no single-sighting individual
    assert 0.05 < share < 0.95


def test_operating_point_on_mixed_body_parts_calls_some_new_and_some_known(
    tmp_path: Path,
) -> None:
    parts = tmp_path / "parts"
    counts = parts_catalogue.make(_subset(tmp_path), parts, seed=0, progress=False, boxes="centre")
    assert min(counts.values()) > 0
    share, _ = _share_called_new(parts, tmp_path / "imported", r"^(\d+)_")
    assert 0.05 < share < 0.95
