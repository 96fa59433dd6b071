"""A new photo's crops: one per crop kind, as the crop stage would cache them."""

from __future__ import annotations

import cv2
import numpy as np

from wildid.config import CropConfig
from wildid.crop.boxes import crop_image
from wildid.crop.foreground import without_background
from wildid.gallery.embedder import PhotoEmbedder


def _photo() -> np.ndarray:
    """A flat brown ellipse (the animal) on colourful noise, filling most of the frame."""
    rng = np.random.default_rng(5)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (180, 240, 3), dtype=np.uint8), (5, 5), 0)
    cv2.ellipse(photo, (120, 90), (80, 55), 0, 0, 360, (40, 80, 140), -1)
    return photo


def test_foreground_kind_is_the_crop_with_its_background_black() -> None:
    embedder = object.__new__(PhotoEmbedder)  # crops() needs no model
    embedder.crop = CropConfig(kinds=["fullbody", "foreground"], size=120)
    embedder.mode = "whole"  # no CAM box: the whole photo is the region
    photo = _photo()
    plain, masked = embedder.crops(photo)
    assert plain.shape == masked.shape == (90, 120, 3)
    expected = crop_image(without_background(photo, (0, 0, 240, 180)), (0, 0, 240, 180), 120)
    expected = cv2.cvtColor(expected, cv2.COLOR_BGR2RGB).astype(int)
    assert np.abs(masked.astype(int) - expected).mean() < 4  # JPEG's loss only
    corner_plain, corner_masked = plain[:10, :10].astype(int), masked[:10, :10].astype(int)
    assert corner_plain.mean() > 40 and corner_masked.mean() < 8  # the background is gone
    assert np.abs(plain[40:50, 55:65].astype(int) - masked[40:50, 55:65]).mean() < 8  # animal kept
