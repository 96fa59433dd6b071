"""Tests for SIFT + RANSAC matching: a warped copy of a pattern matches, another does not."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from wildid.matching.local import LocalConfig, extract, extract_paths, inliers, match_pairs


def _texture(seed: int, size: int = 256) -> np.ndarray:
    """Random blobs and lines: many distinctive corners, like a coat pattern."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 90, np.uint8)
    for _ in range(60):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), int(rng.integers(3, 15)), colour, -1)
        else:
            x2, y2 = (int(v) for v in rng.integers(0, size, 2))
            cv2.line(image, (x, y), (x2, y2), colour, int(rng.integers(1, 4)))
    return image


def _warp(image: np.ndarray) -> np.ndarray:
    """Another photo of the same pattern: rotated, scaled and shifted."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 12, 0.85)
    matrix[:, 2] += (10, -6)
    return cv2.warpAffine(image, matrix, (w, h), borderValue=(90, 90, 90))


@pytest.mark.parametrize("model", ["homography", "affine", "fundamental"])
def test_same_pattern_has_many_more_inliers_than_another(model: str) -> None:
    config = LocalConfig(size=256, features=400, model=model)
    a, same, other = (
        extract(img, config=config) for img in (_texture(0), _warp(_texture(0)), _texture(1))
    )
    assert inliers(a, same, config) >= 30
    assert inliers(a, other, config) < 15


def test_box_limits_keypoints_to_the_region() -> None:
    image = _texture(2)
    image[:, :128] = 90  # left half blank
    config = LocalConfig(size=128, clahe=False)
    assert len(extract(image, (0, 0, 128, 256), config)) == 0
    assert len(extract(image, (128, 0, 256, 256), config)) > 10


def test_extract_paths_caches_and_match_pairs_scores_candidates(tmp_path: Path) -> None:
    paths = []
    for i, image in enumerate((_texture(3), _warp(_texture(3)), _texture(4))):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], image)
    config = LocalConfig(size=256, features=300)
    first = extract_paths(paths, config=config, cache_dir=tmp_path / "cache", progress=False)
    cached = list((tmp_path / "cache").rglob("*.npz"))
    assert len(cached) == 3
    again = extract_paths(paths, config=config, cache_dir=tmp_path / "cache", progress=False)
    assert np.array_equal(first[0].desc, again[0].desc)
    counts = match_pairs([first[0]], first, [[2, 1]], config, workers=1, progress=False)
    assert counts[0].shape == (2,)
    assert counts[0][1] > counts[0][0]


def test_mismatched_boxes_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="boxes"):
        extract_paths(["a.png", "b.png"], [None], cache_dir=tmp_path, progress=False)
