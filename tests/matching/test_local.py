"""Tests for SIFT + RANSAC matching: a warped copy of a pattern matches, another does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from wildid.matching.local import (
    LocalConfig,
    extract,
    extract_paths,
    inliers,
    match_pairs,
    match_row,
)


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


def test_oriented_descriptors_match_a_tilted_pattern_that_upright_ones_miss() -> None:
    """The default (each keypoint at its own orientation) survives a 45-degree tilt;
    `upright=True` (every descriptor at orientation 0) does not, and neither lets a
    different pattern through."""
    image = _texture(0)
    h, w = image.shape[:2]
    tilt = cv2.warpAffine(
        image, cv2.getRotationMatrix2D((w / 2, h / 2), 45, 0.9), (w, h), borderValue=(90,) * 3
    )
    assert not LocalConfig().upright
    for upright, expected in ((False, True), (True, False)):
        config = LocalConfig(size=256, features=400, upright=upright)
        a, tilted, other = (extract(i, config=config) for i in (image, tilt, _texture(1)))
        assert (inliers(a, tilted, config) >= 30) is expected
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
    # a photo reached through a link (another protocol's import) is the same entry, and
    # matching-only settings reuse the keypoints
    link = tmp_path / "link.png"
    link.symlink_to(paths[0])
    stricter = LocalConfig(size=256, features=300, ratio=0.7, model="affine")
    extract_paths([str(link)], config=stricter, cache_dir=tmp_path / "cache", progress=False)
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 3


_AFTER_OPENCV_THREADS = """
import sys
import cv2
import numpy as np
from wildid.matching.local import LocalConfig, extract_paths, match_pairs

big = np.random.default_rng(0).integers(0, 255, (2000, 2000, 3), dtype=np.uint8)
for _ in range(3):  # OpenCV's thread pool busy, as after resizing an embedding's crops
    cv2.GaussianBlur(cv2.resize(big, (1500, 1500)), (15, 15), 0)
paths, config = sys.argv[1:], LocalConfig(size=256, features=300)
candidates = [[1, 2, 3], [0, 2, 3], [0, 1, 3]]
# the pools first: the serial calls make this process's OpenCV single-threaded themselves
two = extract_paths(paths, config=config, cache_dir=paths[0] + ".b", workers=2, progress=False)
pooled = match_pairs(two[:3], two, candidates, config, workers=2, progress=False)
one = extract_paths(paths, config=config, cache_dir=paths[0] + ".a", progress=False)
assert all(np.array_equal(a.desc, b.desc) for a, b in zip(one, two, strict=True))
serial = match_pairs(one[:3], one, candidates, config, workers=1, progress=False)
assert [c.tolist() for c in pooled] == [c.tolist() for c in serial]
assert serial[0][0] > serial[0][1]  # the warped copy is found
print("ok")
"""


def test_worker_processes_after_opencv_threads_finish_with_the_serial_counts(
    tmp_path: Path,
) -> None:
    """Forked workers of a process whose OpenCV thread pool has run used to hang forever
    in their first OpenCV call; run in a fresh interpreter with a time limit."""
    paths = []
    for i, image in enumerate((_texture(5), _warp(_texture(5)), _texture(6), _texture(7))):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], image)
    done = subprocess.run(
        [sys.executable, "-c", _AFTER_OPENCV_THREADS, *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_lnbnn_weighs_what_only_one_candidate_shares_above_what_many_share() -> None:
    """Five candidates share a patch with the query (one background, a common coat
    texture); one shares a smaller part of its own pattern, seen again warped. Pair by
    pair the common patch wins ten to one; one-vs-many (HotSpotter's LNBNN) it is worth
    little, as its keypoints resemble five photos, and the distinctive part wins. With 4
    votes a keypoint (fewer than the five sharers) the next neighbour is another sharer."""
    common, own = _texture(10), _texture(11)

    def halves(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        image = left.copy()
        image[:, 160:] = right[:, 160:]
        return image

    query = halves(common, own)
    photos = [_warp(halves(_texture(20), own))]  # the same animal
    photos += [halves(common, _texture(30 + i)) for i in range(5)]
    photos += [_texture(40 + i) for i in range(4)]
    scores = {}
    for score in ("inliers", "lnbnn"):
        config = LocalConfig(size=256, features=400, score=score, neighbours=4)
        q, gallery = extract(query, config=config), [extract(p, config=config) for p in photos]
        scores[score] = match_row(q, gallery, np.arange(len(gallery)), config)
    assert scores["inliers"][0] < scores["inliers"][1:6].min()
    assert scores["lnbnn"][0] > 1.5 * scores["lnbnn"][1:6].max()
    assert scores["lnbnn"].argmax() == 0 and scores["lnbnn"].dtype == np.float32
    # a subset of the candidates changes the normaliser, so the same pair scores otherwise
    config = LocalConfig(size=256, features=400, score="lnbnn", neighbours=4)
    q, gallery = extract(query, config=config), [extract(p, config=config) for p in photos]
    assert match_row(q, gallery, np.array([1, 6]), config)[0] > scores["lnbnn"][1]


def test_lnbnn_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="score"):
        LocalConfig(score="votes")
    with pytest.raises(ValueError, match="neighbours"):
        LocalConfig(score="lnbnn", neighbours=0)


def test_mismatched_boxes_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="boxes"):
        extract_paths(["a.png", "b.png"], [None], cache_dir=tmp_path, progress=False)


def _scene(seed: int, animal: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A flat-coloured "animal" carrying a pattern, on a textured background (bushes and
    rocks), and a box around it with background inside its corners."""
    rng = np.random.default_rng(seed)
    scene = _texture(100 + seed, 320)  # busy, colourful background
    scene = cv2.GaussianBlur(scene, (3, 3), 0)
    h, w = animal.shape[:2]
    y, x = int(rng.integers(70, 90)), int(rng.integers(80, 100))
    ellipse = np.zeros((h, w), np.uint8)
    cv2.ellipse(ellipse, (w // 2, h // 2), (w // 2 - 2, h // 2 - 2), 0, 0, 360, 255, -1)
    region = scene[y : y + h, x : x + w]
    region[ellipse > 0] = animal[ellipse > 0]
    return scene, (x - 30, y - 30, x + w + 30, y + h + 30)


def _animal() -> np.ndarray:
    """Brown coat with white stripes and spots: few colours, unlike the background."""
    animal = np.full((140, 160, 3), (40, 80, 140), np.uint8)
    rng = np.random.default_rng(7)
    for x in rng.integers(10, 150, 12):
        cv2.line(
            animal, (int(x), 5), (int(x) + int(rng.integers(-15, 15)), 135), (230, 230, 230), 2
        )
    for _ in range(10):
        cx, cy = (int(v) for v in rng.integers(10, 130, 2))
        cv2.circle(animal, (cx, cy), 3, (235, 235, 235), -1)
    return animal


def test_grabcut_mask_removes_background_keypoints_inside_the_box() -> None:
    from wildid.crop.foreground import foreground_mask

    scene, box = _scene(0, _animal())
    config = LocalConfig(size=256, features=800, clahe=False)
    mask = foreground_mask(
        scene, box, config.grabcut_size, config.grabcut_expand, config.min_foreground
    )
    x1, y1, x2, y2 = box
    inside = mask[y1:y2, x1:x2] > 0
    assert 0.2 < inside.mean() < 0.9  # the animal, not the whole box
    assert mask[: y1 - 5].sum() == 0  # nothing above the box

    def on_background(c: LocalConfig) -> float:
        """Share of keypoints (back in photo pixels) off the animal's ellipse."""
        grey_region = scene[y1:y2, x1:x2]
        features = extract(scene, box, c)
        truth = np.zeros(grey_region.shape[:2], np.uint8)
        cv2.ellipse(truth, (30 + 80, 30 + 70), (78, 68), 0, 0, 360, 255, -1)
        ys, xs = np.nonzero(mask) if c.mask == "grabcut" else (None, None)
        if c.mask == "grabcut":
            ox, oy = int(xs.min()), int(ys.min())
            scale = c.size / max(int(ys.max()) + 1 - oy, int(xs.max()) + 1 - ox)
        else:
            ox, oy = x1, y1
            scale = c.size / max(y2 - y1, x2 - x1)
        px = (features.xy / scale + (ox - x1, oy - y1)).astype(int)
        px = np.clip(px, 0, np.array(truth.shape[::-1]) - 1)
        return float((truth[px[:, 1], px[:, 0]] == 0).mean())

    assert on_background(LocalConfig(size=256, features=800, clahe=False, mask="box")) > 0.4
    assert on_background(config) < 0.15


def test_mutual_matches_are_ratio_matches_both_ways() -> None:
    from wildid.matching.local import ratio_matches

    config = LocalConfig(size=256, features=400)
    a, b = (extract(img, config=config) for img in (_texture(5), _warp(_texture(5))))
    src, dst = ratio_matches(a, b, config)
    msrc, mdst = ratio_matches(a, b, LocalConfig(size=256, features=400, mutual=True))
    assert 0 < len(msrc) <= len(src)
    assert set(zip(msrc.tolist(), mdst.tolist(), strict=True)) <= set(
        zip(src.tolist(), dst.tolist(), strict=True)
    )
    back_src, back_dst = ratio_matches(b, a, LocalConfig(size=256, features=400, ratio=1.0))
    nearest_back = dict(zip(back_src.tolist(), back_dst.tolist(), strict=True))
    assert all(nearest_back.get(d) == s for s, d in zip(msrc.tolist(), mdst.tolist(), strict=True))
