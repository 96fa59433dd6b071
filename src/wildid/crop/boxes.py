"""Crop stage: every train and test photo becomes one cached image per crop kind.

Sources of boxes: `boxes.csv` in the competition folder (ground truth for synthetic data,
or boxes a user brings), or none (`whole`: the photo itself). Crops are expanded by a
margin, clipped to the photo and downscaled so their longer side is `crop.size`: training
then reads small files, which keeps two CPU cores busy on the model, not on JPEG decoding.

Output: `working/crops/<fingerprint>/<kind>/<image>` plus `crops.csv` (image, split, kind,
path, x1, y1, x2, y2, source), where source says whether a box was used or the whole
photo stood in for a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wildid import cache
from wildid.config import CropConfig
from wildid.data.competition import Competition
from wildid.io import atomic_path, write_csv

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class CropSet:
    """The crops of a competition: one row per (image, kind), paths to cached files."""

    root: Path
    table: pd.DataFrame  # image, split, kind, path, x1, y1, x2, y2, source

    def paths(self, split: str, kind: str, images: pd.Series) -> list[str]:
        rows = self.table[(self.table["split"] == split) & (self.table["kind"] == kind)]
        lookup = rows.set_index("image")["path"]
        return [str(self.root / p) for p in lookup.loc[images]]


def expand_box(box: Box, margin: float, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return (
        max(0, int(round(x1 - dx))),
        max(0, int(round(y1 - dy))),
        min(width, int(round(x2 + dx))),
        min(height, int(round(y2 + dy))),
    )


def crop_image(image: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Cut `box` out and shrink it so its longer side is at most `size` (aspect kept)."""
    x1, y1, x2, y2 = box
    crop = image[y1:y2, x1:x2]
    scale = size / max(crop.shape[:2])
    if scale < 1:
        new_size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = cv2.resize(crop, new_size, interpolation=cv2.INTER_AREA)
    return crop


def _box_lookup(boxes: pd.DataFrame | None) -> dict[tuple[str, str], Box]:
    if boxes is None:
        return {}
    best = boxes.sort_values("score", ascending=False) if "score" in boxes else boxes
    best = best.drop_duplicates(["image", "kind"])
    coords = best[["x1", "y1", "x2", "y2"]].to_numpy().round().astype(int)
    return {(i, k): tuple(c) for i, k, c in zip(best["image"], best["kind"], coords, strict=True)}


def _crop_one(
    source: Path, target: Path, kind: str, box: Box | None, config: CropConfig
) -> tuple[Box, str]:
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{source}: cannot read image (missing or corrupt file).")
    height, width = image.shape[:2]
    if kind == "whole" or box is None:
        region, used = (0, 0, width, height), "whole" if kind == "whole" else "fallback"
    else:
        region, used = expand_box(box, config.margin, width, height), "box"
        if region[2] - region[0] < 2 or region[3] - region[1] < 2:
            region, used = (0, 0, width, height), "fallback"
    with atomic_path(target) as tmp:
        cv2.imwrite(
            str(tmp), crop_image(image, region, config.size), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
    return region, used


def make_crops(
    competition: Competition,
    config: CropConfig,
    working: str | Path,
    boxes: pd.DataFrame | None = None,
    progress: bool = True,
) -> CropSet:
    """Crop every train and test photo for each configured kind; skip if up to date."""
    boxes = (
        boxes if boxes is not None else (competition.boxes if config.source == "boxes" else None)
    )
    # sample_submission.csv lists the test images: a changed test set must be re-cropped.
    tables = ("train.csv", "sample_submission.csv", "boxes.csv")
    inputs = [cache.file_identity(competition.root / n) for n in tables]
    key = cache.fingerprint(
        config.model_dump(),
        str(competition.root.resolve()),
        inputs,
        None if boxes is None else pd.util.hash_pandas_object(boxes).sum(),
    )
    root = Path(working) / "crops" / key
    manifest = root / "crops.csv"
    if cache.is_done(root, key) and manifest.is_file():
        return CropSet(root, pd.read_csv(manifest, dtype={"image": str}))
    lookup = _box_lookup(boxes)
    jobs = [
        (split, image, kind)
        for split, table in (("train", competition.train), ("test", competition.test))
        for image in table["image"]
        for kind in config.kinds
    ]
    rows = []
    for split, image, kind in tqdm(jobs, desc="crop", disable=not progress, unit="img"):
        relative = Path(kind) / image
        box, used = _crop_one(
            competition.image_path(split, image),
            root / relative,
            kind,
            lookup.get((image, kind)),
            config,
        )
        rows.append((image, split, kind, str(relative), *box, used))
    table = pd.DataFrame(
        rows, columns=["image", "split", "kind", "path", "x1", "y1", "x2", "y2", "source"]
    )
    write_csv(table, manifest)
    cache.mark_done(root, key, images=len(table))
    return CropSet(root, table)
