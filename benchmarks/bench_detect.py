"""Benchmark: train the fullbody/backfin detector on a competition, then detect and crop.

    python benchmarks/bench_detect.py [CONFIG] [key=value ...]
    (default: configs/mini_detector.yaml; `make bench-detect` passes data=$(MINI))

Reports mAP50 per class on individuals held out of detector training, the training and
detection seconds, and how many photos fell back to the whole image. The last line of
output is one JSON object of these figures. A second run reuses the trained detector and
its detections (cached), so delete working/detect/<run>/ to re-measure.
"""

from __future__ import annotations

import json
import sys
import time

import wildid  # noqa: F401  (offline switches before third-party imports)
from wildid.config import load_config
from wildid.crop.detector import crop, detect_boxes, train
from wildid.data.competition import load_competition


def main(argv: list[str]) -> dict:
    path = argv[0] if argv and "=" not in argv[0] else "configs/mini_detector.yaml"
    overrides = [a for a in argv if "=" in a]
    config = load_config(path, ["crop.source=detector", *overrides])
    competition = load_competition(config.data)
    start = time.perf_counter()
    detector = train(config, competition)
    trained = time.perf_counter()
    detections = detect_boxes(config, competition, detector)
    detected = time.perf_counter()
    crops = crop(config, competition, detector)
    done = time.perf_counter()
    missing = (~detections["detected"].astype(bool)).groupby(detections["kind"]).sum()
    return {
        "config": path,
        "data": config.data,
        "model": config.detect.model,
        "imgsz": config.detect.imgsz,
        "epochs": config.detect.epochs,
        **{k: detector.metrics.get(k) for k in ("map50_fullbody", "map50_backfin", "map50")},
        "train_seconds": detector.metrics.get("train_seconds"),
        "wall_train_seconds": round(trained - start, 1),
        "detect_seconds": round(detected - trained, 1),
        "crop_seconds": round(done - detected, 1),
        "photos": int(detections["image"].nunique()),
        "not_detected": {k: int(v) for k, v in missing.items()},
        "crops": str(crops.root),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
