"""Box files from anywhere (`crop.boxes`): our format and the public Happywhale box sets.

Every file is read in place and never written, so it may sit on a read-only path (an
attached Kaggle dataset under /kaggle/input/...). The format is told apart by the columns;
each becomes the boxes table the crop stage reads (image, kind, x1, y1, x2, y2, score),
in the photo's pixels, x2/y2 exclusive corners (x1 < x2, y1 < y2):

wildid (our `boxes.csv`, `wildid boxes` output, the detector's boxes.csv)
    image, kind, x1, y1, x2, y2[, score]: one row per box, several per photo allowed (the
    highest score wins). The `kind` column may be absent when the crop.boxes entry names it.

YOLOv5 detections: `image` (or `image_id`), `bbox`, `conf`; other columns ignored
    Jan Bremer's full-body boxes, fullbody_train.csv / fullbody_test.csv of the Kaggle
    dataset jpbremer/fullbodywhaleannotations; his back-fin boxes, train_backfin.csv /
    test_backfin.csv, the output of the notebook jpbremer/backfin-detection-with-yolov5;
    the 1st-place team's re-runs of that notebook, fullbody_{train,test}_charm.csv and
    backfin_{train,test}_charm.csv (in github.com/knshnb/kaggle-happywhale-1st-place
    input/ and github.com/tyamaguchi17/kaggle-happywhale-1st-place-solution-charmq
    happywhale_data/); Awsaf's yolov5_{train,test}.csv (notebook
    awsaf49/happywhale-cropped-dataset-yolov5). They are copies of train.csv or
    sample_submission.csv with added columns: `bbox` holds the boxes as printed by numpy
    or Python, "[[ 213  813 3054 1301]]" or "[[213, 813, 3054, 1301]]" (x1 y1 x2 y2 in
    pixels), `conf` their scores, "[0.839355]"; both empty where nothing was detected.
    The charm files also hold width, height, image_id and predictions. Of several boxes in
    a row the highest-scoring one is read.

Detic: `image`, `box` (no score)
    phalanx's Detic full-body boxes, train2.csv / test2.csv of the Kaggle dataset
    phalanx/whale2-cropped-dataset (also in the charmq repository's happywhale_data/):
    "329 874 2934 1271" (x1 y1 x2 y2 in pixels, space-separated), empty where none.

Rows without a box, and boxes scored below the entry's `min_score`, are left out: their
photos fall back to the whole photo, which the crop stage counts and reports.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from wildid.data.competition import DataError

COLUMNS = ["image", "kind", "x1", "y1", "x2", "y2", "score"]
KINDS = ("fullbody", "backfin")
FORMATS = (
    "image, kind, x1, y1, x2, y2[, score] (wildid boxes.csv); "
    "image, bbox[, conf] (YOLOv5 detections: jpbremer's fullbody_*.csv, *_backfin.csv); "
    "image, box (Detic: phalanx's train2.csv / test2.csv)"
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class BoxFileError(DataError):
    """A crop.boxes file is missing, of no known format, or holds an unreadable box."""


def _numbers(text: object) -> list[float]:
    if not isinstance(text, str):
        return []  # NaN: an empty cell
    return [float(n) for n in _NUMBER.findall(text)]


def _image_column(table: pd.DataFrame, path: Path) -> str:
    for name in ("image", "image_id"):
        if name in table.columns:
            return name
    raise BoxFileError(
        f"{path}: no 'image' column; found {list(table.columns)}. Expected one of: {FORMATS}."
    )


def _parse_lists(table: pd.DataFrame, column: str, scores: str | None, path: Path) -> list:
    """Per row: (x1, y1, x2, y2, score) of its best box, or None when it has none."""
    out: list = []
    for row, (boxes, conf) in enumerate(
        zip(table[column], table[scores] if scores else [None] * len(table), strict=True)
    ):
        values = _numbers(boxes)
        if not values:
            out.append(None)
            continue
        if len(values) % 4:
            raise BoxFileError(
                f"{path}, row {row + 2}: column '{column}' holds {boxes!r}, not groups of "
                "four numbers (x1 y1 x2 y2)."
            )
        candidates = [values[i : i + 4] for i in range(0, len(values), 4)]
        confs = _numbers(conf)
        if len(confs) == len(candidates):
            best = int(np.argmax(confs))
            out.append((*candidates[best], confs[best]))
        else:  # no score given (or not one per box): the first box
            out.append((*candidates[0], confs[0] if len(confs) == 1 else np.nan))
    return out


def _from_lists(table: pd.DataFrame, image: str, column: str, scores: str | None, path: Path):
    parsed = _parse_lists(table, column, scores, path)
    rows = [(name, *p) for name, p in zip(table[image], parsed, strict=True) if p is not None]
    return pd.DataFrame(rows, columns=["image", "x1", "y1", "x2", "y2", "score"])


def read_box_file(
    path: str | Path, kind: str | None = None, min_score: float = 0.0
) -> pd.DataFrame:
    """The boxes of one file (see the module docstring), as COLUMNS."""
    path = Path(path)
    if not path.is_file():
        raise BoxFileError(f"{path}: box file not found (crop.boxes).")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise BoxFileError(f"{path}: not a readable CSV ({err}).") from err
    columns = set(table.columns)
    if {"x1", "y1", "x2", "y2"} <= columns:
        image = _image_column(table, path)
        boxes = pd.DataFrame({"image": table[image]})
        try:
            for c in ("x1", "y1", "x2", "y2"):
                boxes[c] = table[c].astype(float)
            boxes["score"] = table["score"].astype(float) if "score" in columns else np.nan
        except ValueError as err:
            raise BoxFileError(f"{path}: a coordinate or score is not a number ({err}).") from err
        if "kind" in columns:
            boxes["kind"] = table["kind"]
            if kind is not None:
                boxes = boxes[boxes["kind"] == kind]
        elif kind is None:
            raise BoxFileError(
                f"{path}: no 'kind' column; name the kind its boxes are in crop.boxes, "
                f"e.g. [{{path: {path}, kind: fullbody}}]."
            )
        else:
            boxes["kind"] = kind
        boxes = boxes.dropna(subset=["x1", "y1", "x2", "y2"])
        bad = boxes.index[(boxes["x2"] <= boxes["x1"]) | (boxes["y2"] <= boxes["y1"])]
        if len(bad):
            raise BoxFileError(f"{path}, row {int(bad[0]) + 2}: box has x2 <= x1 or y2 <= y1.")
    elif "bbox" in columns or "box" in columns:
        column = "bbox" if "bbox" in columns else "box"
        scores = next((c for c in ("conf", "score") if c in columns), None)
        if kind is None:
            raise BoxFileError(
                f"{path}: detections of no stated kind; name it in crop.boxes, "
                f"e.g. [{{path: {path}, kind: fullbody}}] (or kind: backfin)."
            )
        boxes = _from_lists(table, _image_column(table, path), column, scores, path)
        boxes["kind"] = kind
        # Public detections hold a few degenerate boxes: left out (the photo falls back).
        boxes = boxes[(boxes["x2"] > boxes["x1"]) & (boxes["y2"] > boxes["y1"])]
    else:
        raise BoxFileError(
            f"{path}: no box columns; found {list(table.columns)}. Expected one of: {FORMATS}."
        )
    unknown = sorted(set(boxes["kind"]) - set(KINDS))
    if unknown:
        raise BoxFileError(f"{path}: kind {unknown[0]!r} is none of {list(KINDS)}.")
    boxes = boxes[~(boxes["score"] < min_score)]  # NaN (no score) is kept
    return boxes[COLUMNS].reset_index(drop=True)


def read_box_files(entries) -> pd.DataFrame:  # entries: Iterable[config.BoxFile]
    """Every entry's boxes, the earlier entry first where two give a photo and kind a box."""
    tables = [
        read_box_file(e.path, e.kind, e.min_score).assign(priority=i) for i, e in enumerate(entries)
    ]
    if not tables:
        return pd.DataFrame(columns=[*COLUMNS, "priority"])
    return pd.concat(tables, ignore_index=True)
