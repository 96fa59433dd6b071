"""A catalogue whose photos show different body parts, made from a folder-per-individual one.

    python benchmarks/parts_catalogue.py --data ../shared/datasets/nyala --out /tmp/nyala-parts
    make bench-quality DATA=/tmp/nyala-parts

Field catalogues mix views: one photo shows the flank, the next the rump, another the
head. Nothing says which, so every pair is compared, and most cross-part pairs, even of
one animal, look unrelated. Whether the open-set operating point survives that (neither
"everything new" nor "nothing new") is what this catalogue tests. Each photo becomes one
of three parts, drawn per photo from `--seed`: the whole photo, or the animal box's
front or rear half (its left or right half: the box of `wildid.crop.saliency`, CAM of the
shipped ImageNet classifier), named `<sighting>_<side>photo_<part>.jpg` so the benchmark's
sighting and flank regexes still apply. The images are derived from the catalogue: write
them outside the project (it is not redistributable), e.g. under /tmp. The last line
printed is JSON (photos per part).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from wildid.crop.saliency import CamBoxer
from wildid.io import atomic_path

PARTS = ("whole", "front", "rear")
SUFFIXES = (".jpg", ".jpeg", ".png")


def part_of(photo: np.ndarray, box: tuple[int, int, int, int], part: str) -> np.ndarray:
    """The whole photo, or the left ("front") or right ("rear") half of the box."""
    if part == "whole":
        return photo
    x1, y1, x2, y2 = box
    middle = (x1 + x2) // 2
    crop = photo[y1:y2, x1:middle] if part == "front" else photo[y1:y2, middle:x2]
    return crop if min(crop.shape[:2]) >= 16 else photo


def make(
    src: Path,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    boxes: str = "cam",
    individuals: int = 0,
) -> dict[str, int]:
    """Write the parts catalogue of `src` to `out`; `boxes`: "cam" (the animal box) or
    "centre" (the photo's middle 80%, no network: for tests); `individuals`: only that many
    (the first, sorted) when > 0."""
    if out.resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"{out}: inside the catalogue {src}; write it elsewhere.")
    files = sorted(
        Path(folder) / name
        for folder, _, names in os.walk(src, followlinks=True)  # a catalogue of links too
        for name in names
        if Path(name).suffix.lower() in SUFFIXES
    )
    if individuals:
        keep = sorted({p.parent for p in files})[:individuals]
        files = [p for p in files if p.parent in set(keep)]
    rng = np.random.default_rng(seed)
    parts = rng.choice(len(PARTS), size=len(files))
    boxer = CamBoxer() if boxes == "cam" else None
    counts = dict.fromkeys(PARTS, 0)
    for path, k in tqdm(list(zip(files, parts, strict=True)), disable=not progress):
        part = PARTS[int(k)]
        target = out / path.parent.relative_to(src) / f"{path.stem}_{part}.jpg"
        counts[part] += 1
        if target.is_file():
            continue
        photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if photo is None:
            continue
        if boxer is not None:
            box, _ = boxer.box(photo)
        else:
            h, w = photo.shape[:2]
            box = (w // 10, h // 10, w - w // 10, h - h // 10)
        with atomic_path(target) as tmp:
            cv2.imwrite(str(tmp), part_of(photo, box, part), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return counts


def main(argv: list[str] | None = None) -> dict[str, int]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/datasets/nyala")
    p.add_argument("--out", required=True, help="new catalogue folder (outside the project)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    counts = make(Path(args.data), Path(args.out), args.seed, not args.no_progress)
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
