"""Tests for training-free animal boxes from the ImageNet classifier's activation map."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from wildid.crop.saliency import CamBoxer, CamConfig, cam_boxes

NYALA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "nyala"


@pytest.fixture(scope="module")
def boxer() -> CamBoxer:
    return CamBoxer(CamConfig(size=160))


def test_box_lies_inside_the_photo_and_reports_its_area(boxer: CamBoxer) -> None:
    rng = np.random.default_rng(0)
    photo = np.full((120, 200, 3), 128, np.uint8)
    photo[30:90, 60:150] = rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)
    (x1, y1, x2, y2), area = boxer.box(photo)
    assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 120
    assert np.isclose(area, (x2 - x1) * (y2 - y1) / (120 * 200))
    assert boxer.cam(photo).max() == pytest.approx(1.0, abs=1e-5)


def test_cam_boxes_table(tmp_path: Path, boxer: CamBoxer) -> None:
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), np.random.default_rng(1).integers(0, 255, (64, 96, 3), np.uint8))
    table = cam_boxes(["a.jpg"], [str(path)], config=CamConfig(size=96), progress=False)
    assert list(table.columns) == ["image", "kind", "x1", "y1", "x2", "y2", "area"]
    assert table.loc[0, "kind"] == "fullbody" and table.loc[0, "x2"] <= 96


@pytest.mark.skipif(not NYALA.is_dir(), reason="needs ../shared/datasets/nyala (real photos)")
def test_nyala_box_trims_the_photo_but_keeps_most_of_the_animal(boxer: CamBoxer) -> None:
    photo = cv2.imread(str(next(iter(sorted(NYALA.rglob("*.jpg"))))))
    (x1, y1, x2, y2), area = boxer.box(photo)
    h, w = photo.shape[:2]
    assert 0.1 < area <= 1.0
    assert x1 < w / 2 < x2 and y1 < h / 2 < y2  # the animal fills the middle of the frame
