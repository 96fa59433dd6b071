"""Crop stage: every train and test photo becomes one cached image per crop kind.

Sources of boxes: `boxes.csv` in the competition folder (ground truth for synthetic data,
or boxes a user brings), the box files of `crop.boxes` (read in place from any path, e.g.
public Happywhale detections under /kaggle/input: formats in `wildid.data.boxfiles`), the
detector's (`crop.source: detector`), or none (`whole`: the photo itself). Per kind,
`crop.boxes` replaces the other source: a kind any entry provides takes its boxes from the
entries alone (the earlier entry first where two overlap); other kinds keep boxes.csv's
(or the detector's). Crops are expanded by a margin, clipped to the photo and downscaled
so their longer side is `crop.size`: training then reads small files, which keeps two CPU
cores busy on the model, not on JPEG decoding.

No silent whole-photo training: a photo without a usable box is cropped whole and
recorded as `fallback`. After cropping (the manifest is saved first, so a re-run resumes),
when more than half the photos of a kind and split fell back, `make_crops` raises
`FallbackError` with the counts and the ways out (attach `crop.boxes`, use the detector,
make CAM boxes with `wildid boxes`, or accept whole photos: `crop.source=whole` or
`crop.allow_fallback=true`); a minority of fallbacks is printed as one warning line.
Every caller (the CLI's run and crop, the notebooks, the detector's crop) goes through it.

Output: `working/crops/<key>/<kind>/<image>` plus the manifest `crops.csv` (image, split,
kind, path, x1, y1, x2, y2, source, size, mtime_ns, width, height): the region cropped,
whether a box was used or the whole photo stood in for a missing one, and the identity
of the photo it was cut from (file size and mtime, pixel width and height).

The folder's key is the crop settings and the competition folder only, so it outlives
edits of the data. The cache is per crop: a crop is reused while its photo's size and
mtime are unchanged and the region it would be cut from now (the current box, expanded
for that photo) is the one recorded; a new or replaced photo, or one whose box changed,
is cropped again. The manifest is rewritten atomically every `SAVE_EVERY` crops and at
the end (also when the run fails), so a killed run resumes where it stopped. Photos no
longer in the competition leave the manifest; their files stay.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from wildid import cache
from wildid.config import CropConfig
from wildid.crop.foreground import Box, without_background
from wildid.data.boxfiles import read_box_files
from wildid.data.check import MAX_PIXELS, PhotoError, require_photo
from wildid.data.competition import Competition
from wildid.errors import WildidError
from wildid.io import atomic_path, write_csv

SAVE_EVERY = 500  # crops between two rewrites of the manifest
# Settings that choose boxes or judge the result, not how a box is cropped: kept out of the
# crop folder's key (a changed box is re-cropped per photo by the manifest's records).
NOT_IN_KEY = {"boxes", "allow_fallback"}


class FallbackError(WildidError, ValueError):
    """Most photos of a crop kind and split got no box: they would train as whole photos."""


class Crop(NamedTuple):
    """One row of the manifest: a crop, the region it was cut from, and its photo."""

    image: str
    split: str
    kind: str
    path: str  # relative to the crop folder
    x1: int
    y1: int
    x2: int
    y2: int
    source: str  # box, whole, or fallback (no usable box: the whole photo)
    size: int  # the photo file's size and mtime when it was cropped
    mtime_ns: int
    width: int  # the photo's pixel size
    height: int


COLUMNS = list(Crop._fields)


@dataclass(frozen=True)
class CropSet:
    """The crops of a competition: one row per (image, kind), paths to cached files."""

    root: Path
    table: pd.DataFrame  # COLUMNS: image, split, kind, path, x1, y1, x2, y2, source, ...

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


def crop_region(
    kind: str, box: Box | None, margin: float, width: int, height: int
) -> tuple[Box, str]:
    """The region of a width x height photo to crop, and its source: box, whole, fallback."""
    whole = (0, 0, width, height)
    if kind == "whole" or box is None:
        return whole, "whole" if kind == "whole" else "fallback"
    region = expand_box(box, margin, width, height)
    if region[2] - region[0] < 2 or region[3] - region[1] < 2:
        return whole, "fallback"
    return region, "box"


def gather_boxes(
    competition: Competition, config: CropConfig, boxes: pd.DataFrame | None = None
) -> pd.DataFrame | None:
    """The boxes to crop with: `boxes` (e.g. the detector's) or the competition's boxes.csv
    (with crop.source=boxes), each kind that crop.boxes provides replaced by its files'."""
    if boxes is None and config.source == "boxes":
        boxes = competition.boxes
    if config.source == "whole" or not config.boxes:
        return boxes
    files = read_box_files(config.boxes)
    if boxes is not None:
        kept = boxes[~boxes["kind"].isin(set(files["kind"]))]
        files = pd.concat([files, kept.assign(priority=len(config.boxes))], ignore_index=True)
    return files


def _box_lookup(boxes: pd.DataFrame | None) -> dict[tuple[str, str], Box]:
    """(image, kind) -> box: of several, the first entry's (`priority`), then the best score.
    The foreground kind is cut from the fullbody box."""
    if boxes is None:
        return {}
    keys = [c for c in ("priority", "score") if c in boxes]
    best = boxes.sort_values(keys, ascending=[c == "priority" for c in keys], kind="stable")
    best = best.drop_duplicates(["image", "kind"])
    coords = best[["x1", "y1", "x2", "y2"]].to_numpy(dtype=float).round().astype(int)
    lookup = {(i, k): tuple(c) for i, k, c in zip(best["image"], best["kind"], coords, strict=True)}
    lookup.update({(i, "foreground"): b for (i, k), b in lookup.items() if k == "fullbody"})
    return lookup


def _unreadable(source: Path) -> PhotoError:
    return PhotoError(f"{source}: cannot read image (missing or corrupt file).")


def _crop_one(
    source: Path,
    target: Path,
    kind: str,
    box: Box | None,
    config: CropConfig,
    max_pixels: int = MAX_PIXELS,
) -> tuple[Box, str, tuple[int, int]]:
    """Crop `source` into `target`; return the region, its source and the photo's size.

    A truncated JPEG (which OpenCV decodes grey past the cut, saying so only on stderr) or
    a photo above `max_pixels` (OpenCV's size assertion) is refused first, with PhotoError
    naming it (`wildid.data.check.require_photo`, the check `wildid check` makes).
    """
    require_photo(source, max_pixels)
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise _unreadable(source)
    height, width = image.shape[:2]
    region, used = crop_region(kind, box, config.margin, width, height)
    if kind == "foreground":
        image = without_background(image, region)
    with atomic_path(target) as tmp:
        cv2.imwrite(
            str(tmp), crop_image(image, region, config.size), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
    return region, used, (width, height)


def _read_manifest(path: Path) -> dict[tuple[str, str, str], Crop]:
    """A previous run's crops by (image, split, kind); none if absent or of another format."""
    if not path.is_file():
        return {}
    text = dict.fromkeys(["image", "split", "kind", "path", "source"], str)
    table = pd.read_csv(path, dtype=text, keep_default_na=False)
    if list(table.columns) != COLUMNS:
        return {}
    crops = (Crop(*row) for row in table.itertuples(index=False, name=None))
    return {(c.image, c.split, c.kind): c for c in crops}


def _reusable(crop: Crop, stamp: tuple[int, int], box: Box | None, margin: float) -> bool:
    """Whether `crop` is what its photo (whose file is `stamp` now) and `box` would give."""
    recorded = ((crop.x1, crop.y1, crop.x2, crop.y2), crop.source)
    now = crop_region(crop.kind, box, margin, crop.width, crop.height)
    return (crop.size, crop.mtime_ns) == stamp and now == recorded


def make_crops(
    competition: Competition,
    config: CropConfig,
    working: str | Path,
    boxes: pd.DataFrame | None = None,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> CropSet:
    """Crop every train and test photo for each configured kind; reuse up-to-date crops.

    Raises FallbackError (after saving the manifest) when most photos of a kind and split
    got no box; see `check_fallbacks`.
    """
    boxes = gather_boxes(competition, config, boxes)
    key = cache.fingerprint(config.model_dump(exclude=NOT_IN_KEY), str(competition.root.resolve()))
    root = Path(working) / "crops" / key
    manifest = root / "crops.csv"
    previous = _read_manifest(manifest)
    lookup = _box_lookup(boxes)
    order: list[tuple[str, str, str]] = []  # (image, split, kind) in table order
    crops: dict[tuple[str, str, str], Crop] = {}  # up to date, reused or made by this run
    todo: list[tuple[tuple[str, str, str], tuple[int, int]]] = []  # and the photo's stamp
    for split, table in (("train", competition.train), ("test", competition.test)):
        for image in table["image"]:
            source = competition.image_path(split, image)
            stamp = cache.file_stamp(source)
            if stamp is None:
                raise _unreadable(source)
            for kind in config.kinds:
                job = (image, split, kind)
                order.append(job)
                old = previous.get(job)
                box = lookup.get((image, kind))
                if (
                    old is not None
                    and _reusable(old, stamp, box, config.margin)
                    and (root / old.path).is_file()
                ):
                    crops[job] = old
                else:
                    todo.append((job, stamp))

    def save() -> None:
        done = [crops[job] for job in order if job in crops]
        write_csv(pd.DataFrame(done, columns=COLUMNS), manifest)

    changed = bool(todo) or len(crops) != len(previous)  # photos cropped, or photos gone
    jobs = tqdm(todo, desc=f"crop ({len(crops)} reused)", disable=not progress, unit="img")
    try:
        for count, ((image, split, kind), stamp) in enumerate(jobs, start=1):
            relative = Path(kind) / image
            region, used, (width, height) = _crop_one(
                competition.image_path(split, image),
                root / relative,
                kind,
                lookup.get((image, kind)),
                config,
                max_pixels,
            )
            crops[image, split, kind] = Crop(
                image, split, kind, str(relative), *region, used, *stamp, width, height
            )
            if count % SAVE_EVERY == 0:
                save()
    finally:  # also when a crop fails: a re-run resumes from what was done
        if changed:
            save()
    result = CropSet(root, pd.DataFrame([crops[job] for job in order], columns=COLUMNS))
    check_fallbacks(result, config)
    return result


def fallback_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per kind and split (kinds cropped from boxes): photos, and how many fell back."""
    boxed = table[table["kind"] != "whole"]
    return (
        boxed.assign(fallback=boxed["source"] == "fallback")
        .groupby(["kind", "split"], sort=False)
        .agg(photos=("image", "size"), fallback=("fallback", "sum"))
        .reset_index()
    )


def check_fallbacks(crops: CropSet, config: CropConfig) -> None:
    """Refuse most photos of a kind and split cropped whole for want of a box; warn of a few.

    Nothing is checked with crop.source=whole (whole photos asked for); with
    crop.allow_fallback true any share is accepted and warned of.
    """
    if config.source == "whole":
        return
    counts = fallback_counts(crops.table)
    counts = counts[counts["fallback"] > 0]
    if counts.empty:
        return
    listed = ", ".join(
        f"{r.kind} {r.split} {r.fallback}/{r.photos}" for r in counts.itertuples(index=False)
    )
    where = f"(source 'fallback' in {crops.root / 'crops.csv'})"
    most = counts[counts["fallback"] * 2 > counts["photos"]]
    if most.empty or config.allow_fallback:
        print(
            f"warning: crop: no box, so cropped as the whole photo: {listed} {where}",
            file=sys.stderr,
        )
        return
    if config.source == "detector":
        source, detect = "the detector", "lower detect.conf or train it longer"
    else:
        source, detect = "boxes.csv / crop.boxes", "detect boxes (crop.source=detector)"
    raise FallbackError(
        f"crop: most photos got no box from {source} and would train and match as whole "
        f"photos: {listed} {where}. Attach a box file (crop.boxes=[{{path: FILE, kind: "
        "fullbody}]: ours or public Happywhale detections, see wildid.data.boxfiles), "
        f"{detect}, make CAM boxes (`wildid boxes DATA`, then the crop.boxes it prints), "
        "or accept whole photos (crop.source=whole, or crop.allow_fallback=true)."
    )
