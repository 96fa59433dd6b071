"""Run the detector over every train and test photo, then crop what it found.

Detections go to `<working>/detect/<run>/boxes.csv` (image, split, kind, x1, y1, x2, y2,
score, detected): per photo and kind, the highest-scoring box, or, where the detector
found none above `detect.conf`, the whole photo with `detected` False. The crops are made
by `wildid.crop.boxes.make_crops` from the detected boxes (margin, aspect ratio kept), so a
photo without a detection falls back to the whole photo and `crops.csv` records it as
`fallback`; when that is most photos of a kind and split, make_crops raises FallbackError
after saving its manifest (`crop.allow_fallback=true` accepts it), as for boxes.csv.
Nothing is written into the competition folder: detections, the exported dataset (links
to the photos) and the runs live under `<working>/detect/`.

Detection is the slow part, so it is resumable: the file is rewritten after every batch,
and a re-run with the same weights and settings only detects photos not yet in it.
"""

from __future__ import annotations

import pandas as pd
import torch
from tqdm.auto import tqdm

from wildid import cache
from wildid.config import Config, DetectConfig
from wildid.crop.boxes import CropSet, make_crops
from wildid.crop.detector.train import CLASSES, Detector, keep_threads, ultralytics_env, yolo_device
from wildid.crop.detector.train import train as train_detector
from wildid.crop.detector.weights import check_weights
from wildid.data.competition import Competition
from wildid.io import write_csv

COLUMNS = ["image", "split", "kind", "x1", "y1", "x2", "y2", "score", "detected"]


def best_boxes(result, image: str, split: str) -> list[tuple]:
    """One row per kind: its top-scoring box, or the whole image marked not detected.

    Kinds are matched by the model's class names, so weights trained elsewhere work when
    they name a class `fullbody` or `backfin`.
    """
    height, width = result.orig_shape
    boxes = result.boxes
    xyxy, scores = boxes.xyxy.tolist(), boxes.conf.tolist()
    names = [result.names[int(c)] for c in boxes.cls.tolist()]
    rows = []
    for kind in CLASSES:
        found = [(s, b) for s, b, n in zip(scores, xyxy, names, strict=True) if n == kind]
        if found:
            score, (x1, y1, x2, y2) = max(found, key=lambda sb: sb[0])
            rows.append(
                (
                    image,
                    split,
                    kind,
                    round(x1, 1),
                    round(y1, 1),
                    round(x2, 1),
                    round(y2, 1),
                    round(score, 4),
                    True,
                )
            )
        else:
            rows.append((image, split, kind, 0.0, 0.0, float(width), float(height), 0.0, False))
    return rows


def _key(detector: Detector, dc: DetectConfig) -> str:
    return cache.fingerprint(cache.file_identity(detector.weights), dc.imgsz, dc.conf, dc.iou)


def detect_boxes(
    config: Config, competition: Competition, detector: Detector, progress: bool = True
) -> pd.DataFrame:
    """Detections for every train and test photo (see the module docstring)."""
    dc = config.detect
    out, record = detector.run_dir / "boxes.csv", detector.run_dir / "predict"
    key = _key(detector, dc)
    rows: list[tuple] = []
    if cache.is_done(record, key) and out.is_file():
        rows = list(pd.read_csv(out, dtype={"image": str}).itertuples(index=False, name=None))
    cache.mark_done(record, key)  # the rows in boxes.csv belong to these weights
    seen = {(r[1], r[0]) for r in rows}
    jobs = [
        (split, image)
        for split, table in (("train", competition.train), ("test", competition.test))
        for image in table["image"]
        if (split, image) not in seen
    ]
    if jobs:
        with ultralytics_env() as YOLO:
            model = YOLO(str(check_weights(detector.weights, dc.trust_weights)))
            model.add_callback("on_predict_start", keep_threads(torch.get_num_threads()))
            chunks = [jobs[i : i + dc.predict_batch] for i in range(0, len(jobs), dc.predict_batch)]
            for chunk in tqdm(chunks, desc="detect", disable=not progress, unit="batch"):
                paths = [str(competition.image_path(split, image)) for split, image in chunk]
                results = model.predict(
                    paths,
                    imgsz=dc.imgsz,
                    conf=dc.conf,
                    iou=dc.iou,
                    device=yolo_device(dc.device),
                    batch=len(paths),
                    verbose=False,
                    save=False,
                )
                for (split, image), result in zip(chunk, results, strict=True):
                    rows.extend(best_boxes(result, image, split))
                write_csv(pd.DataFrame(rows, columns=COLUMNS), out)
    table = pd.DataFrame(rows, columns=COLUMNS)
    wanted = pd.concat(
        [
            competition.train[["image"]].assign(split="train"),
            competition.test[["image"]].assign(split="test"),
        ]
    )
    return table.merge(wanted, on=["image", "split"])[COLUMNS]


def crop(
    config: Config,
    competition: Competition,
    detector: Detector | None = None,
    progress: bool = True,
) -> CropSet:
    """Detect (training the detector first if needed) and crop every photo per kind."""
    detector = detector or train_detector(config, competition, progress)
    detections = detect_boxes(config, competition, detector, progress)
    found = detections[detections["detected"].astype(bool)].sort_values(["image", "kind"])
    return make_crops(
        competition,
        config.crop,
        config.working,
        boxes=found.drop(columns=["split", "detected"]),
        progress=progress,
    )


def summary(detections: pd.DataFrame) -> pd.DataFrame:
    """Per split and kind: photos, how many had a detection, the median score."""
    return (
        detections.groupby(["split", "kind"])
        .agg(
            images=("image", "size"), detected=("detected", "sum"), median_score=("score", "median")
        )
        .reset_index()
    )
