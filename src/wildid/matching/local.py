"""Local-feature matching: SIFT keypoints, ratio test, RANSAC geometric verification.

Why: a striped or spotted animal's pattern is a set of small, rigid landmarks; two photos
of one individual share many of them in a consistent geometric arrangement, while two
individuals share only chance matches that no single transform explains. Ranking the
gallery by the number of RANSAC inliers is how wildlife-tools' local matchers (SIFT,
SuperPoint + LightGlue) score a pair, and it needs no training.

Whole-photo matching drowns in the background (one waterhole appears behind many animals),
so extraction takes an optional region (a box around the animal) and keeps only the
keypoints inside it.

Pairwise matching is quadratic: `match_pairs` scores only the (query, gallery) pairs it is
given, so callers shortlist each query's gallery first (by a global embedding, or by side).
Keypoints and descriptors are cached per image under `cache_dir`, keyed by the extraction
settings and the image file's identity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from wildid import cache
from wildid.io import atomic_path

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class LocalConfig:
    """SIFT extraction and matching settings.

    size: images are resized so their longer side (of the region, when a box is given) is
        this many pixels before extraction; stripes need detail, but more pixels mean more
        and slower keypoints.
    features: keypoints kept per image (strongest first).
    root_sift: Hellinger-normalised descriptors (Arandjelovic & Zisserman 2012): a free gain
        in matching precision over plain L2 on SIFT.
    ratio: Lowe's ratio test threshold.
    model: geometric model fitted by RANSAC: "homography" (a flank is near planar),
        "affine" (4-dof similarity: stricter, fewer chance inliers) or "fundamental".
    reproj: RANSAC inlier threshold in pixels (at `size`).
    clahe: equalise local contrast first, so stripes in shade still give keypoints.
    """

    size: int = 384
    features: int = 600
    root_sift: bool = True
    ratio: float = 0.8
    model: str = "homography"
    reproj: float = 8.0
    clahe: bool = True


@dataclass(frozen=True)
class Features:
    """One image's keypoints (x, y in the resized frame) and descriptors."""

    xy: np.ndarray  # (N, 2) float32
    desc: np.ndarray  # (N, 128) float32

    def __len__(self) -> int:
        return len(self.xy)


def _prepare(image: np.ndarray, box: Box | None, config: LocalConfig) -> np.ndarray:
    """Grey, cropped to the box, resized so the longer side is `config.size`."""
    if box is not None:
        x1, y1, x2, y2 = box
        if x2 - x1 >= 8 and y2 - y1 >= 8:
            image = image[y1:y2, x1:x2]
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    scale = config.size / max(grey.shape[:2])
    if scale != 1:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=interp)
    if config.clahe:
        grey = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(grey)
    return grey


def extract(
    image: np.ndarray, box: Box | None = None, config: LocalConfig = LocalConfig()
) -> Features:
    """SIFT keypoints and (Root)SIFT descriptors of an image, inside `box` when given."""
    grey = _prepare(image, box, config)
    sift = cv2.SIFT_create(nfeatures=config.features)
    keypoints, desc = sift.detectAndCompute(grey, None)
    if desc is None or not keypoints:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    desc = desc.astype(np.float32)
    if config.root_sift:
        desc /= np.maximum(desc.sum(axis=1, keepdims=True), 1e-7)
        desc = np.sqrt(desc)
    xy = np.array([kp.pt for kp in keypoints], dtype=np.float32)
    return Features(xy, desc)


def _cache_file(cache_dir: Path, path: str, box: Box | None, config: LocalConfig) -> Path:
    key = cache.fingerprint(asdict(config), cache.file_identity(path), box)
    return cache_dir / key[:2] / f"{key}.npz"


def _load_or_extract(job: tuple[str, Box | None, LocalConfig, str]) -> Features:
    path, box, config, cache_dir = job
    target = _cache_file(Path(cache_dir), path, box, config)
    if target.is_file():
        with np.load(target) as data:
            return Features(data["xy"], data["desc"])
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: cannot read image (missing or corrupt file).")
    features = extract(image, box, config)
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, xy=features.xy, desc=features.desc.astype(np.float16))
    return Features(features.xy, features.desc.astype(np.float16))


def extract_paths(
    paths: Sequence[str],
    boxes: Sequence[Box | None] | None = None,
    config: LocalConfig = LocalConfig(),
    cache_dir: str | Path = "working/cache/local",
    workers: int = 1,
    progress: bool = True,
) -> list[Features]:
    """Features of every image (cached: a re-run only reads files)."""
    boxes = list(boxes) if boxes is not None else [None] * len(paths)
    if len(boxes) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(boxes)} boxes; pass one box per path.")
    jobs = [(str(p), b, config, str(cache_dir)) for p, b in zip(paths, boxes, strict=True)]
    return _map(_load_or_extract, jobs, workers, "sift", progress)


def _map(fn, jobs: list, workers: int, desc: str, progress: bool) -> list:
    if workers <= 1 or len(jobs) < 2:
        return [fn(j) for j in tqdm(jobs, desc=desc, disable=not progress, unit="img")]
    chunk = max(1, len(jobs) // (workers * 8))
    with ProcessPoolExecutor(workers) as pool:
        return list(
            tqdm(
                pool.map(fn, jobs, chunksize=chunk),
                total=len(jobs),
                desc=desc,
                disable=not progress,
                unit="img",
            )
        )


def inliers(
    a: Features,
    b: Features,
    config: LocalConfig = LocalConfig(),
    matcher: cv2.DescriptorMatcher | None = None,
) -> int:
    """RANSAC inliers among the ratio-test matches of a pair: the pair's score."""
    if len(a) < 2 or len(b) < 2:
        return 0
    matcher = matcher or cv2.BFMatcher(cv2.NORM_L2)
    knn = matcher.knnMatch(np.asarray(a.desc, np.float32), np.asarray(b.desc, np.float32), k=2)
    good = [
        m
        for m, n in (pair for pair in knn if len(pair) == 2)
        if m.distance < config.ratio * n.distance
    ]
    minimum = 3 if config.model == "affine" else (8 if config.model == "fundamental" else 4)
    if len(good) < minimum:
        return 0
    src = a.xy[[m.queryIdx for m in good]]
    dst = b.xy[[m.trainIdx for m in good]]
    # One keypoint matched to many: count distinct targets only, or repeats inflate scores.
    if config.model == "affine":
        _, mask = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=config.reproj
        )
    elif config.model == "fundamental":
        _, mask = cv2.findFundamentalMat(src, dst, cv2.FM_RANSAC, config.reproj, 0.99)
    else:
        _, mask = cv2.findHomography(src, dst, cv2.RANSAC, config.reproj)
    if mask is None:
        return 0
    keep = mask.ravel().astype(bool)
    return len({m.trainIdx for m, k in zip(good, keep, strict=True) if k})


_WORKER: dict = {}


def _init_worker(queries: list[Features], gallery: list[Features], config: LocalConfig) -> None:
    cv2.setNumThreads(1)
    _WORKER.update(
        queries=queries, gallery=gallery, config=config, matcher=cv2.BFMatcher(cv2.NORM_L2)
    )


def _match_row(job: tuple[int, np.ndarray]) -> np.ndarray:
    q, candidates = job
    w = _WORKER
    return np.array(
        [inliers(w["queries"][q], w["gallery"][g], w["config"], w["matcher"]) for g in candidates],
        dtype=np.int32,
    )


def match_pairs(
    queries: Sequence[Features],
    gallery: Sequence[Features],
    candidates: np.ndarray | Sequence[Sequence[int]],
    config: LocalConfig = LocalConfig(),
    workers: int = 1,
    progress: bool = True,
) -> list[np.ndarray]:
    """Inlier counts of each query against its candidate gallery indices (row by row)."""
    if len(candidates) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(candidates)} candidate rows.")
    jobs = [(q, np.asarray(c, dtype=np.int64)) for q, c in enumerate(candidates)]
    if workers <= 1:
        _init_worker(list(queries), list(gallery), config)
        return [_match_row(j) for j in tqdm(jobs, desc="match", disable=not progress, unit="query")]
    with ProcessPoolExecutor(
        workers, initializer=_init_worker, initargs=(list(queries), list(gallery), config)
    ) as pool:
        return list(
            tqdm(
                pool.map(_match_row, jobs, chunksize=4),
                total=len(jobs),
                desc="match",
                disable=not progress,
                unit="query",
            )
        )


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
