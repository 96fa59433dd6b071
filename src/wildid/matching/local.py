"""Local-feature matching: SIFT keypoints, ratio test, RANSAC geometric verification.

Why: a striped or spotted animal's pattern is a set of small, rigid landmarks; two photos
of one individual share many of them in a consistent geometric arrangement, while two
individuals share only chance matches that no single transform explains. Ranking the
gallery by the number of RANSAC inliers is how wildlife-tools' local matchers (SIFT,
SuperPoint + LightGlue) score a pair, and it needs no training.

Whole-photo matching drowns in the background (one waterhole appears behind many animals),
so extraction takes an optional region (a box around the animal) and keeps only the
keypoints on the animal: with `mask="grabcut"` (the default) a foreground mask is refined
from the box by GrabCut (`wildid.crop.foreground.foreground_mask`: colour models of the
box's inside and outside, graph cut), so the grass and bushes inside the box give no
keypoints either; with `mask="box"`, every keypoint in the box is kept.

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
from wildid.crop.foreground import Box, box_region, foreground_mask
from wildid.io import atomic_path


@dataclass(frozen=True)
class LocalConfig:
    """SIFT extraction and matching settings.

    size: images are resized so their longer side (of the region, when a box is given) is
        this many pixels before extraction. On nyala (boxes of ~250-380 px) 256 px told
        same-individual pairs from others best (40 queries, each against its own
        individual's same-flank photos and 40 others': pair AUC 0.64, against 0.55 at 384,
        0.59 at 192, 0.51 at 128; at full size SIFT finds fur texture, not stripe layout);
        upright descriptors and the affine model lifted the share of queries whose best
        true pair beats every other from 0.35 to 0.475 there (AUC 0.65).
    features: keypoints kept per image (strongest first).
    root_sift: Hellinger-normalised descriptors (Arandjelovic & Zisserman 2012): a free gain
        in matching precision over plain L2 on SIFT.
    ratio: Lowe's ratio test threshold.
    model: geometric model fitted by RANSAC: "homography" (a flank is near planar),
        "affine" (4-dof similarity: stricter, fewer chance inliers) or "fundamental".
    reproj: RANSAC inlier threshold in pixels (at `size`).
    clahe: equalise local contrast first, so stripes in shade still give keypoints.
    mask: "grabcut" keeps keypoints on the GrabCut foreground refined from the box (the
        animal, not the background inside its box); "box" keeps every keypoint in the box.
    grabcut_size: longer side of the photo GrabCut runs on (a coarse mask is enough, and
        GrabCut's cost grows with the pixels).
    grabcut_expand: fraction of the box added on each side before GrabCut, so an animal
        the box cuts off (a head outside a CAM box) can be recovered; GrabCut only shrinks.
    min_foreground: GrabCut results covering less of the box than this are not trusted
        (the box's keypoints are kept instead).
    ransac_iters: RANSAC's iteration cap. A pair of two individuals has few consistent
        matches, so RANSAC would run to OpenCV's 2,000 on every such pair (most of a
        shortlist); a true pair has many and stops far earlier.
    min_matches: pairs with fewer ratio-test matches score 0 without RANSAC.
    upright: descriptors at orientation 0 (one per keypoint location) instead of each
        keypoint's dominant gradient direction(s). Upright won the 40-query pair probe
        above, but on the whole nyala benchmark SIFT's own orientations fuse better with
        the trained embedding (closed top-1 0.359 against 0.333, open gmean 0.382 against
        0.349; benchmarks/README.md): animals stand upright, but not always squarely to
        the camera, and a flank turned or tilted keeps its keypoints' orientations.
    mutual: keep only matches that are also the gallery keypoint's nearest neighbour in
        the query (on top of the ratio test).
    score: how a (query, gallery photo) pair is scored. "inliers": RANSAC inliers among
        the pair's ratio-test matches (pair by pair). "lnbnn": HotSpotter's one-vs-many
        scoring (Crall et al. 2013, local naive Bayes nearest neighbour, McCann & Lowe
        2012): each query keypoint meets the descriptors of the whole candidate list at
        once; its `neighbours` nearest votes for their photos with weight d(next
        neighbour) - d(vote), so a keypoint that resembles many photos (fur texture, a
        common stripe end) votes with nearly nothing and a distinctive one with a lot; a
        photo's score is the summed weight of its votes that RANSAC keeps. The score then
        depends on the candidate list (`PairCache` keys it by that list).
    neighbours: votes per query keypoint with `score="lnbnn"` (the next nearest is the
        normaliser; 8 fused better than 4 or 2 on nyala, benchmarks/README.md).
    """

    size: int = 256
    features: int = 600
    root_sift: bool = True
    ratio: float = 0.8
    model: str = "affine"
    reproj: float = 8.0
    clahe: bool = True
    mask: str = "grabcut"
    grabcut_size: int = 180
    grabcut_expand: float = 0.1
    min_foreground: float = 0.15
    ransac_iters: int = 1000
    min_matches: int = 6
    upright: bool = False
    mutual: bool = False
    score: str = "inliers"
    neighbours: int = 8

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"local score {self.score!r}: expected one of {', '.join(SCORES)}.")
        if self.neighbours < 1:
            raise ValueError(f"local neighbours {self.neighbours}: expected at least 1.")
        if self.mask not in MASKS:
            raise ValueError(f"local mask {self.mask!r}: expected one of {', '.join(MASKS)}.")
        if self.model not in MODELS:
            raise ValueError(f"local model {self.model!r}: expected one of {', '.join(MODELS)}.")


MASKS = ("grabcut", "box")
MODELS = ("homography", "affine", "fundamental")
SCORES = ("inliers", "lnbnn")


@dataclass(frozen=True)
class Features:
    """One image's keypoints (x, y in the resized frame) and descriptors."""

    xy: np.ndarray  # (N, 2) float32
    desc: np.ndarray  # (N, 128) float32

    def __len__(self) -> int:
        return len(self.xy)

    @classmethod
    def empty(cls) -> Features:
        """No keypoints: a photo SIFT finds nothing in, or one that cannot be read."""
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))


def _prepare(
    image: np.ndarray, box: Box | None, config: LocalConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey region (the box, or the mask's bounding box), resized so the longer side is
    `config.size`, and the keypoint mask in that frame (None: every pixel)."""
    mask = None
    if config.mask == "grabcut":
        full = foreground_mask(
            image, box, config.grabcut_size, config.grabcut_expand, config.min_foreground
        )
        ys, xs = np.nonzero(full)
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        mask = full[y1:y2, x1:x2]
    else:
        x1, y1, x2, y2 = box_region(image, box)
    image = image[y1:y2, x1:x2]
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    scale = config.size / max(grey.shape[:2])
    if scale != 1:
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=interp)
        if mask is not None:
            mask = cv2.resize(mask, (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_NEAREST)
    if config.clahe:
        grey = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(grey)
    if mask is not None and mask.all():
        mask = None
    return grey, mask


def extract(
    image: np.ndarray, box: Box | None = None, config: LocalConfig = LocalConfig()
) -> Features:
    """SIFT keypoints and (Root)SIFT descriptors of an image: on the animal (the GrabCut
    foreground refined from `box`, `config.mask="grabcut"`) or anywhere in `box`."""
    grey, mask = _prepare(image, box, config)
    sift = cv2.SIFT_create(nfeatures=config.features)
    if config.upright:  # one orientation per location: animals stand upright
        found = sift.detect(grey, mask)
        unique = {(round(k.pt[0], 1), round(k.pt[1], 1), round(k.size, 1)): k for k in found}
        keypoints = [
            cv2.KeyPoint(k.pt[0], k.pt[1], k.size, 0.0, k.response, k.octave)
            for k in unique.values()
        ]
        keypoints, desc = sift.compute(grey, keypoints) if keypoints else ([], None)
    else:
        keypoints, desc = sift.detectAndCompute(grey, mask)
    if desc is None or not keypoints:
        return Features.empty()
    desc = desc.astype(np.float32)
    if config.root_sift:
        desc /= np.maximum(desc.sum(axis=1, keepdims=True), 1e-7)
        desc = np.sqrt(desc)
    xy = np.array([kp.pt for kp in keypoints], dtype=np.float32)
    return Features(xy, desc)


# The LocalConfig fields an image's keypoints depend on (the rest only change matching).
EXTRACTION = (
    "size",
    "features",
    "root_sift",
    "clahe",
    "mask",
    "grabcut_size",
    "grabcut_expand",
    "min_foreground",
    "upright",
)


def extraction_key(config: LocalConfig) -> dict:
    """The settings an image's keypoints depend on (matching settings are not)."""
    return {k: v for k, v in asdict(config).items() if k in EXTRACTION}


def _cache_file(cache_dir: Path, path: str, box: Box | None, config: LocalConfig) -> Path:
    # By the file linked to: one photo imported twice (two protocols' symlinks) is one entry.
    real = os.path.realpath(path)
    key = cache.fingerprint(extraction_key(config), cache.file_identity(real), box)
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
    with _pool(workers) as pool:
        return list(
            tqdm(
                pool.map(fn, jobs, chunksize=chunk),
                total=len(jobs),
                desc=desc,
                disable=not progress,
                unit="img",
            )
        )


def _squared_norms(desc: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", desc, desc)


def ratio_matches(
    a: Features, b: Features, config: LocalConfig = LocalConfig(), dots: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Lowe's ratio test: (query keypoint, gallery keypoint) index pairs whose nearest
    neighbour in `b` is closer than `config.ratio` times the second nearest.

    Distances come from one matrix product (`dots`, a.desc @ b.desc.T, may be given when
    computed for many gallery images at once): squared L2 = |a|^2 + |b|^2 - 2 a.b, so the
    nearest neighbours are the largest 2 a.b - |b|^2 (two max passes, no sort)."""
    if len(a) < 2 or len(b) < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty
    qa = np.asarray(a.desc, np.float32)
    qb = np.asarray(b.desc, np.float32)
    dots = qa @ qb.T if dots is None else dots
    score = 2.0 * dots - _squared_norms(qb)[None, :]
    rows = np.arange(len(score))
    nearest = score.argmax(axis=1)
    first = score[rows, nearest]
    score[rows, nearest] = -np.inf
    second = score.max(axis=1)
    norms = _squared_norms(qa)
    d1, d2 = np.maximum(norms - first, 0.0), np.maximum(norms - second, 0.0)
    passed = d1 < config.ratio**2 * d2
    if config.mutual:  # b's nearest in a, by the same distances (|b|^2 constant per column)
        back = (2.0 * dots - norms[:, None]).argmax(axis=0)
        passed &= back[nearest] == rows
    keep = np.flatnonzero(passed)
    return keep.astype(np.int64), nearest[keep].astype(np.int64)


def _ransac(
    a: Features, b: Features, src_idx: np.ndarray, dst_idx: np.ndarray, config: LocalConfig
) -> np.ndarray:
    """The matches (query keypoint `src_idx`, gallery keypoint `dst_idx`) that RANSAC keeps
    under `config.model`, as a boolean mask (all False when too few to fit)."""
    minimum = 3 if config.model == "affine" else (8 if config.model == "fundamental" else 4)
    none = np.zeros(len(src_idx), bool)
    if len(src_idx) < max(minimum, config.min_matches):
        return none
    src = np.ascontiguousarray(a.xy[src_idx], np.float32)
    dst = np.ascontiguousarray(b.xy[dst_idx], np.float32)
    if config.model == "affine":
        _, mask = cv2.estimateAffinePartial2D(
            src,
            dst,
            method=cv2.RANSAC,
            ransacReprojThreshold=config.reproj,
            maxIters=config.ransac_iters,
        )
    elif config.model == "fundamental":
        _, mask = cv2.findFundamentalMat(
            src, dst, cv2.FM_RANSAC, config.reproj, 0.99, config.ransac_iters
        )
    else:
        _, mask = cv2.findHomography(
            src, dst, cv2.RANSAC, config.reproj, maxIters=config.ransac_iters
        )
    return none if mask is None else mask.ravel().astype(bool)


def verified(
    a: Features, b: Features, src_idx: np.ndarray, dst_idx: np.ndarray, config: LocalConfig
) -> int:
    """RANSAC inliers among the given matches, counting each gallery keypoint once (one
    keypoint matched by many would inflate the score)."""
    keep = _ransac(a, b, src_idx, dst_idx, config)
    return len(np.unique(dst_idx[keep]))


def inliers(
    a: Features,
    b: Features,
    config: LocalConfig = LocalConfig(),
    matcher: object | None = None,
) -> int:
    """RANSAC inliers among the ratio-test matches of a pair: the pair's score.
    (`matcher` is accepted for older callers and ignored.)"""
    src, dst = ratio_matches(a, b, config)
    return verified(a, b, src, dst, config)


def match_row(
    query: Features,
    gallery: Sequence[Features],
    candidates: np.ndarray,
    config: LocalConfig = LocalConfig(),
) -> np.ndarray:
    """Inlier counts of one query against its candidate gallery images.

    The query's descriptors meet all candidates' in one matrix product (BLAS), cut into
    one block per candidate for the ratio test and RANSAC: about twice as fast as
    OpenCV's brute-force matcher pair by pair."""
    if config.score == "lnbnn":
        return lnbnn_row(query, gallery, candidates, config)
    out = np.zeros(len(candidates), dtype=np.int32)
    if len(query) < 2 or len(candidates) == 0:
        return out
    blocks = [gallery[g] for g in candidates]
    sizes = np.array([len(b) for b in blocks])
    if sizes.sum() == 0:
        return out
    stacked = np.concatenate([np.asarray(b.desc, np.float32) for b in blocks])
    dots = np.asarray(query.desc, np.float32) @ stacked.T
    ends = np.cumsum(sizes)
    for j, (block, start, stop) in enumerate(zip(blocks, ends - sizes, ends, strict=True)):
        if stop - start >= 2:
            src, dst = ratio_matches(query, block, config, dots[:, start:stop])
            out[j] = verified(query, block, src, dst, config)
    return out


def lnbnn_row(
    query: Features,
    gallery: Sequence[Features],
    candidates: np.ndarray,
    config: LocalConfig = LocalConfig(),
) -> np.ndarray:
    """One-vs-many scores of one query against its candidate gallery photos
    (`LocalConfig.score="lnbnn"`): each query keypoint votes for the photos of its
    `config.neighbours` nearest descriptors among all candidates' (one per photo, the
    nearest), weighted by d(next nearest) - d(vote); a photo scores the weight of its
    votes that RANSAC keeps, each of its keypoints counted once (its largest vote)."""
    out = np.zeros(len(candidates), dtype=np.float32)
    blocks = [gallery[g] for g in candidates]
    sizes = np.array([len(b) for b in blocks], dtype=np.int64)
    k = config.neighbours
    if len(query) < 2 or sizes.sum() <= k:
        return out
    stacked = np.concatenate([np.asarray(b.desc, np.float32) for b in blocks])
    owner = np.repeat(np.arange(len(blocks)), sizes)
    within = np.arange(len(stacked)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    q = np.asarray(query.desc, np.float32)
    d2 = _squared_norms(q)[:, None] + _squared_norms(stacked)[None, :] - 2.0 * (q @ stacked.T)
    near = np.argpartition(d2, k, axis=1)[:, : k + 1]
    order = np.argsort(np.take_along_axis(d2, near, axis=1), axis=1)
    near = np.take_along_axis(near, order, axis=1)
    dist = np.sqrt(np.maximum(np.take_along_axis(d2, near, axis=1), 0.0))
    weight = (dist[:, k:] - dist[:, :k]).ravel()
    rows = np.repeat(np.arange(len(q)), k)
    cols = near[:, :k].ravel()
    photo = owner[cols]
    # one vote per (query keypoint, photo): the nearest (votes are sorted nearest first)
    _, first = np.unique(rows * len(blocks) + photo, return_index=True)
    rows, cols, photo, weight = rows[first], cols[first], photo[first], weight[first]
    for j in np.unique(photo):
        mine = photo == j
        src, dst, w = rows[mine], within[cols[mine]], weight[mine]
        keep = _ransac(query, blocks[j], src, dst, config)
        if keep.any():
            best = np.zeros(sizes[j], np.float32)
            np.maximum.at(best, dst[keep], w[keep])
            out[j] = best.sum()
    return out


_WORKER: dict = {}


def _init_worker(queries: list[Features], gallery: list[Features], config: LocalConfig) -> None:
    cv2.setNumThreads(1)
    _WORKER.update(queries=queries, gallery=gallery, config=config)


def _match_row(job: tuple[int, np.ndarray]) -> np.ndarray:
    q, candidates = job
    w = _WORKER
    return match_row(w["queries"][q], w["gallery"], candidates, w["config"])


def match_pairs(
    queries: Sequence[Features],
    gallery: Sequence[Features],
    candidates: np.ndarray | Sequence[Sequence[int]],
    config: LocalConfig = LocalConfig(),
    workers: int = 1,
    progress: bool = True,
) -> list[np.ndarray]:
    """Scores of each query against its candidate gallery indices (row by row): inlier
    counts, or one-vs-many LNBNN weights with `config.score="lnbnn"`."""
    if len(candidates) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(candidates)} candidate rows.")
    jobs = [(q, np.asarray(c, dtype=np.int64)) for q, c in enumerate(candidates)]
    if workers <= 1:
        _init_worker(list(queries), list(gallery), config)
        return [_match_row(j) for j in tqdm(jobs, desc="match", disable=not progress, unit="query")]
    with _pool(workers, _init_worker, (list(queries), list(gallery), config)) as pool:
        return list(
            tqdm(
                pool.map(_match_row, jobs, chunksize=4),
                total=len(jobs),
                desc="match",
                disable=not progress,
                unit="query",
            )
        )


def _pool(workers: int, initializer=None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """Forked worker processes that cannot deadlock: a worker forked while this process's
    OpenCV thread pool is alive inherits its locks but not its threads, and its first
    OpenCV call waits forever (seen: both matching workers asleep, 0 s of CPU, after an
    embedding's crops were resized). So this process's OpenCV is made single-threaded
    first, as for the loader workers (`wildid.data.dataset.loader_options`). Forked, not
    spawned: spawned workers re-import the caller's main module (torch and all, 1-2 min
    on two busy cores) and get the keypoints pickled."""
    cv2.setNumThreads(1)
    return ProcessPoolExecutor(workers, initializer=initializer, initargs=initargs)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
