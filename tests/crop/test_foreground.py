"""The animal inside its box: GrabCut's foreground and the background blacked out."""

from __future__ import annotations

import cv2
import numpy as np

from wildid.crop.foreground import box_region, foreground_mask, without_background


def _scene() -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]:
    """A flat brown ellipse (the animal) on colourful noise (bushes), its box, and the
    ellipse's true mask."""
    rng = np.random.default_rng(3)
    scene = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    scene = cv2.GaussianBlur(scene, (5, 5), 0)
    truth = np.zeros(scene.shape[:2], np.uint8)
    cv2.ellipse(truth, (160, 120), (70, 50), 0, 0, 360, 255, -1)
    scene[truth > 0] = (40, 80, 140)
    return scene, (70, 55, 250, 185), truth > 0


def test_box_region_clips_and_falls_back_to_the_whole_photo() -> None:
    image = np.zeros((50, 80, 3), np.uint8)
    assert box_region(image, (-5, 10, 100, 40)) == (0, 10, 80, 40)
    assert box_region(image, (10, 10, 14, 40)) == (0, 0, 80, 50)  # under 8 px wide
    assert box_region(image, None) == (0, 0, 80, 50)


def test_foreground_mask_finds_the_animal_not_the_box() -> None:
    scene, box, truth = _scene()
    mask = foreground_mask(scene, box) > 0
    x1, y1, x2, y2 = box
    assert (mask & truth).sum() / truth.sum() > 0.9  # most of the animal kept
    inside_box = np.zeros_like(truth)
    inside_box[y1:y2, x1:x2] = True
    background = inside_box & ~truth
    assert (mask & background).sum() / background.sum() < 0.3  # the box's corners cut
    assert np.array_equal(mask, foreground_mask(scene, box) > 0)  # the same every run


def test_without_background_blacks_out_all_but_the_animal() -> None:
    scene, box, truth = _scene()
    out = without_background(scene, box)
    assert out.shape == scene.shape and out.dtype == scene.dtype
    kept = (out == scene).all(axis=2)
    black = (out == 0).all(axis=2)
    assert kept[truth].mean() > 0.9
    assert black[~truth].mean() > 0.8
    assert (kept | black).all()  # a pixel is the photo's or black, nothing in between


def test_a_failed_cut_keeps_the_whole_box() -> None:
    flat = np.full((100, 100, 3), 128, np.uint8)  # nothing to tell animal from background
    mask = foreground_mask(flat, (20, 20, 80, 80))
    assert (mask[20:80, 20:80] == 255).all() and mask[:20].sum() == 0
