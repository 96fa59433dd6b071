"""Tests for running the detector over a competition and cropping what it finds."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from wildid.crop.boxes import FallbackError
from wildid.crop.detector.crop import COLUMNS, best_boxes, crop, detect_boxes

# The package exports the function `crop`, which hides the module of the same name.
detect_crop = importlib.import_module("wildid.crop.detector.crop")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two (N, 4) x1y1x2y2 arrays."""
    lo, hi = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _fake_result(xyxy: list, conf: list, cls: list) -> SimpleNamespace:
    boxes = SimpleNamespace(
        xyxy=torch.tensor(xyxy).reshape(-1, 4), conf=torch.tensor(conf), cls=torch.tensor(cls)
    )
    return SimpleNamespace(orig_shape=(80, 120), boxes=boxes, names={0: "fullbody", 1: "backfin"})


def test_best_boxes_keeps_the_top_box_per_kind_and_marks_missing_kinds() -> None:
    result = _fake_result(
        [[1, 2, 30, 40], [5, 6, 50, 60], [7, 8, 9, 10]], [0.4, 0.9, 0.3], [0.0, 0.0, 0.0]
    )
    rows = pd.DataFrame(best_boxes(result, "a.jpg", "train"), columns=COLUMNS).set_index("kind")
    assert rows.loc["fullbody", ["x1", "y1", "x2", "y2", "score"]].tolist() == [5, 6, 50, 60, 0.9]
    assert not rows.loc["backfin", "detected"]
    assert rows.loc["backfin", ["x1", "y1", "x2", "y2"]].tolist() == [0, 0, 120, 80]


def test_detector_boxes_overlap_the_true_boxes(tiny_run) -> None:
    detections = detect_boxes(
        tiny_run.config, tiny_run.competition, tiny_run.detector, progress=False
    )
    n = len(tiny_run.competition.train) + len(tiny_run.competition.test)
    assert len(detections) == 2 * n
    truth = tiny_run.competition.boxes
    found = detections[detections["detected"]].merge(
        truth, on=["image", "kind"], suffixes=("", "_true")
    )
    cols = ["x1", "y1", "x2", "y2"]
    found["iou"] = _iou(
        found[cols].to_numpy(float), found[[c + "_true" for c in cols]].to_numpy(float)
    )
    fullbody = found[(found["split"] == "train") & (found["kind"] == "fullbody")]
    # Overfitted on these photos, the boxes sit on the true ones (a 128 px photo's back fin,
    # ~10 px, is too small for this short training: the mini-competition measures it).
    assert fullbody["iou"].median() > 0.5, fullbody["iou"].describe()
    assert detections.loc[detections["kind"] == "fullbody", "detected"].mean() > 0.7


def test_crops_follow_the_detected_boxes(tiny_run) -> None:
    crops = crop(tiny_run.config, tiny_run.competition, tiny_run.detector, progress=False)
    table = crops.table[crops.table["kind"] == "fullbody"]
    assert set(table["source"]) <= {"box", "fallback"}
    row = table[table["source"] == "box"].iloc[0]
    image = cv2.imread(str(crops.root / row["path"]))
    width, height = row["x2"] - row["x1"], row["y2"] - row["y1"]
    assert abs(image.shape[1] / image.shape[0] - width / height) < 0.1  # aspect ratio kept


def test_no_detection_falls_back_to_the_whole_photo(tiny_run, tmp_path, tiny_config) -> None:
    refused = tiny_config(
        tiny_run.competition.root, tmp_path, "detect.conf=1.0", "crop.allow_fallback=false"
    )
    with pytest.raises(FallbackError, match="most photos got no box from the detector"):
        crop(refused, tiny_run.competition, tiny_run.detector, progress=False)
    config = tiny_config(tiny_run.competition.root, tmp_path, "detect.conf=1.0")
    crops = crop(config, tiny_run.competition, tiny_run.detector, progress=False)
    assert set(crops.table["source"]) == {"fallback"}
    row = crops.table.iloc[0]
    photo = cv2.imread(str(tiny_run.competition.image_path(row["split"], row["image"])))
    assert (row["x1"], row["y1"], row["x2"], row["y2"]) == (0, 0, photo.shape[1], photo.shape[0])
    detections = pd.read_csv(tiny_run.detector.run_dir / "boxes.csv")
    assert not detections["detected"].any()


def test_rerun_detects_only_photos_not_yet_done(tiny_run, monkeypatch) -> None:
    first = detect_boxes(tiny_run.config, tiny_run.competition, tiny_run.detector, progress=False)
    path = tiny_run.detector.run_dir / "boxes.csv"
    kept = first[~first["image"].isin(first["image"].unique()[:3])]
    kept.to_csv(path, index=False)  # as if a run was killed before the last 3 photos
    seen: list[str] = []
    original = detect_crop.best_boxes
    monkeypatch.setattr(
        detect_crop,
        "best_boxes",
        lambda result, image, split: seen.append(image) or original(result, image, split),
    )
    again = detect_boxes(tiny_run.config, tiny_run.competition, tiny_run.detector, progress=False)
    assert sorted(seen) == sorted(first["image"].unique()[:3])
    key = ["image", "kind"]
    pd.testing.assert_frame_equal(
        again.sort_values(key, ignore_index=True),
        first.sort_values(key, ignore_index=True),
        check_dtype=False,
    )
