"""The animal inside its box: a foreground mask refined from the box by GrabCut.

A box around an animal holds grass, bushes and water too, and photos of one sighting share
that background: a model can learn the waterhole instead of the stripes, and a keypoint
matcher finds the same bush in many photos. GrabCut (Rother et al. 2004) fits colour
models to the pixels outside the box (sure background) and inside it (probable
foreground) and cuts the graph between them, which leaves the animal. Two stages use it:
keypoints are kept on the mask only (`wildid.matching.local`, `mask="grabcut"`), and the
`foreground` crop kind is the fullbody crop with everything off the mask blacked out
(`wildid.crop.boxes`), the letterbox's own padding colour, so the model sees no
background at all.
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]


def box_region(image: np.ndarray, box: Box | None) -> Box:
    """`box` clipped to the photo; the whole photo without a box or for one under 8 px."""
    h, w = image.shape[:2]
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 - x1 >= 8 and y2 - y1 >= 8:
            return x1, y1, x2, y2
    return 0, 0, w, h


def foreground_mask(
    image: np.ndarray,
    box: Box | None = None,
    size: int = 180,
    expand: float = 0.1,
    min_foreground: float = 0.15,
    iterations: int = 3,
) -> np.ndarray:
    """A uint8 mask of the photo (255 = animal) refined from `box` by GrabCut.

    GrabCut runs on a copy shrunk so its longer side is `size` px (a coarse mask is
    enough, and its cost grows with the pixels), with the box expanded by `expand` of its
    size on each side, so an animal the box cuts off (a head outside a CAM box) can be
    recovered: GrabCut only shrinks. Without a box, or when the box is (nearly) the whole
    photo, a centred rectangle leaving 5% on each side seeds it. A cut that keeps less
    than `min_foreground` of the box gives the box itself: GrabCut loses an animal that
    fills the photo (the frame it learns the background from is animal too). The same
    photo and box give the same mask every run.
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box_region(image, box)
    box_mask = np.zeros((h, w), np.uint8)
    box_mask[y1:y2, x1:x2] = 255
    if image.ndim != 3 or image.shape[2] != 3:
        return box_mask
    scale = min(1.0, size / max(h, w))
    small = (
        cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if scale < 1
        else image
    )
    sh, sw = small.shape[:2]
    ex, ey = (x2 - x1) * expand, (y2 - y1) * expand
    rx1, ry1 = max(0, int((x1 - ex) * scale)), max(0, int((y1 - ey) * scale))
    rx2, ry2 = min(sw, int(np.ceil((x2 + ex) * scale))), min(sh, int(np.ceil((y2 + ey) * scale)))
    # Keep a frame of 5% outside the rectangle: sure background samples.
    fx, fy = max(1, round(0.05 * sw)), max(1, round(0.05 * sh))
    rx1, ry1, rx2, ry2 = max(rx1, fx), max(ry1, fy), min(rx2, sw - fx), min(ry2, sh - fy)
    if rx2 - rx1 < 4 or ry2 - ry1 < 4:
        return box_mask
    labels = np.zeros((sh, sw), np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut seeds its colour models by k-means: the same mask every run
    try:
        cv2.grabCut(
            small,
            labels,
            (rx1, ry1, rx2 - rx1, ry2 - ry1),
            background,
            foreground,
            iterations,
            cv2.GC_INIT_WITH_RECT,
        )
    except cv2.error:  # a flat image: no colour model to fit
        return box_mask
    cut = np.where((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    mask = cv2.resize(cut, (w, h), interpolation=cv2.INTER_NEAREST)
    if (mask[y1:y2, x1:x2] > 0).mean() < min_foreground:
        return box_mask
    return mask


def without_background(image: np.ndarray, box: Box | None = None) -> np.ndarray:
    """The photo with every pixel off the animal's `foreground_mask` set to 0 (black)."""
    mask = foreground_mask(image, box)
    keep = mask[..., None] > 0 if image.ndim == 3 else mask > 0
    return np.where(keep, image, 0).astype(image.dtype)
