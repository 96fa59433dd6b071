"""Train the fullbody/backfin detector (ultralytics YOLO) on a competition's boxes.csv.

`boxes.csv` (image, kind, x1, y1, x2, y2) becomes an ultralytics dataset under
`<working>/detect/<run>/dataset/` (images linked, YOLO txt labels, data.yaml); <run> is
`detect.run` or, by default, the model's name and a fingerprint of the config and boxes. Whole
individuals are held out for validation, so the reported mAP50 per class is measured on
animals the detector never saw. Outputs in `<working>/detect/<run>/`: `train/weights/`
(ultralytics' best.pt and last.pt), `metrics.json` (map50_fullbody, map50_backfin, ...),
`stage.json` (the fingerprint that lets a re-run skip training).

Ultralytics is made to behave offline and to share the machine: the font it wants for
plots is pointed at a local one (it would otherwise ask the network for Arial.ttf), plots
are off, and the torch thread count it changes on CPU is restored afterwards. Every .pt
goes through `weights.check_weights` before ultralytics unpickles it (detect.trust_weights).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image
from tqdm.auto import tqdm

from wildid import cache
from wildid.config import Config, DetectConfig
from wildid.crop.detector.weights import check_weights
from wildid.data.competition import Competition, DataError
from wildid.data.folds import _hold_out
from wildid.io import write_text
from wildid.layout import RunLayout

CLASSES = ("fullbody", "backfin")
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


@dataclass(frozen=True)
class Detector:
    """A trained detector: its weights and its validation metrics."""

    run_dir: Path
    weights: Path
    metrics: dict[str, Any]


def run_dir(config: Config, competition: Competition) -> Path:
    """<working>/detect/<run>: detect.run, or the model's name and the config's fingerprint."""
    dc = config.detect
    name = dc.run or f"{Path(dc.model).stem}-{_fingerprint(config, competition)}"
    return RunLayout.of(config).detector(name)


def yolo_device(name: str) -> str:
    """Our device names (auto, cpu, cuda, cuda:0, 0) in ultralytics' form."""
    if name == "auto":
        return "0" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return "0"
    return name.removeprefix("cuda:")


@contextlib.contextmanager
def ultralytics_env() -> Iterator[Any]:
    """Import ultralytics ready to run offline; yield its YOLO class.

    Ultralytics resolves its plotting font at every dataset check and downloads Arial.ttf
    when missing: a local font copied under that name stops the network call. On CPU it
    also sets torch to cpu_count - 1 threads for the whole process: `keep_threads` callbacks
    undo that while it trains and predicts, and the count is restored on exit so the
    embedding stages after it keep every core.
    """
    threads = torch.get_num_threads()
    from matplotlib import get_data_path
    from ultralytics import YOLO
    from ultralytics.utils import USER_CONFIG_DIR

    local = Path(get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in FONTS:
        if not (USER_CONFIG_DIR / name).exists() and local.is_file():
            shutil.copyfile(local, USER_CONFIG_DIR / name)
    try:
        yield YOLO
    finally:
        torch.set_num_threads(threads)


def keep_threads(threads: int):
    """An ultralytics callback that sets torch's thread count back after device selection."""
    return lambda *_: torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- dataset


def detector_boxes(competition: Competition) -> pd.DataFrame:
    """The train-split rows of boxes.csv for our classes, joined with individual_id."""
    if competition.boxes is None:
        raise DataError(
            f"{competition.root / 'boxes.csv'}: not found; training a detector needs boxes "
            "(image, kind, x1, y1, x2, y2). Bring one, or pass detect.model=<weights.pt> and "
            "crop with an already trained detector."
        )
    boxes = competition.boxes[competition.boxes["kind"].isin(CLASSES)]
    boxes = boxes.merge(competition.train[["image", "individual_id"]], on="image")
    if boxes.empty:
        raise DataError(
            f"{competition.root / 'boxes.csv'}: no {list(CLASSES)} box for any image of train.csv."
        )
    return boxes


def split_images(boxes: pd.DataFrame, val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Hold out whole individuals (about `val_fraction` of the images) for validation."""
    per_image = boxes.drop_duplicates("image")[["image", "individual_id"]]
    counts = per_image.groupby("individual_id").size()
    order = np.random.default_rng(seed).permutation(sorted(counts.index))
    held = _hold_out(order, counts, val_fraction * len(per_image)) or [counts.idxmin()]
    if len(held) == len(counts):
        raise DataError(
            "boxes.csv: a detector needs boxes for at least two individuals, one "
            "to train on and one to validate on."
        )
    is_val = per_image["individual_id"].isin(held)
    return {
        "train": sorted(per_image.loc[~is_val, "image"]),
        "val": sorted(per_image.loc[is_val, "image"]),
    }


def yolo_label(rows: pd.DataFrame, width: int, height: int) -> str:
    """YOLO txt lines: class cx cy w h, normalised by the image size, clipped to it."""
    lines = []
    for row in rows.itertuples():
        x1, x2 = np.clip([row.x1, row.x2], 0, width)
        y1, y2 = np.clip([row.y1, row.y2], 0, height)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(
            f"{CLASSES.index(row.kind)} {cx:.6f} {cy:.6f} "
            f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"
        )
    return "\n".join(lines) + "\n"


def _link(source: Path, target: Path) -> None:
    """Symlink (no copy of a large competition); copy where links are not allowed."""
    target.unlink(missing_ok=True)
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copyfile(source, target)


def export_dataset(
    competition: Competition, config: DetectConfig, out: Path, progress: bool = True
) -> Path:
    """Write images/{train,val}, labels/{train,val} and data.yaml under `out`; return it."""
    boxes = detector_boxes(competition)
    splits = split_images(boxes, config.val_fraction, config.seed)
    by_image = dict(tuple(boxes.groupby("image")))
    if out.exists():
        shutil.rmtree(out)  # a previous export may hold images of another split
    jobs = [(part, image) for part, images in splits.items() for image in images]
    for part, image in tqdm(jobs, desc="detector dataset", disable=not progress, unit="img"):
        source = competition.image_path("train", image)
        with Image.open(source) as im:  # reads the header only
            width, height = im.size
        (out / "images" / part).mkdir(parents=True, exist_ok=True)
        _link(source, out / "images" / part / image)
        label = out / "labels" / part / f"{Path(image).stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(yolo_label(by_image[image], width, height))
    data = {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(CLASSES)),
    }
    return write_text(out / "data.yaml", yaml.safe_dump(data, sort_keys=False))


# ----------------------------------------------------------------------------- training


def _fingerprint(config: Config, competition: Competition) -> str:
    boxes = competition.boxes
    return cache.fingerprint(
        # trust_weights decides whether a file loads, not what it computes.
        config.detect.model_dump(exclude={"conf", "iou", "predict_batch", "trust_weights"}),
        str(competition.root.resolve()),
        cache.file_identity(competition.root / "train.csv"),
        None if boxes is None else int(pd.util.hash_pandas_object(boxes).sum()),
        cache.file_identity(config.detect.model) if Path(config.detect.model).is_file() else None,
    )


def local_weights(model: str) -> Path:
    """The weights file named by detect.model; never a download."""
    if not (model.endswith(".pt") and Path(model).is_file()):
        raise FileNotFoundError(
            f"detect.model={model}: weights file not found (nothing is "
            "downloaded; give a local .pt path, or a model yaml such as "
            "yolov8n.yaml with detect.epochs > 0 to train from scratch)."
        )
    return Path(model)


def _fit(YOLO: Any, dc: DetectConfig, data_yaml: Path, out: Path, resume: bool) -> None:
    """Train (or resume a killed run) with ultralytics; weights land in out/train/weights."""
    last = out / "train" / "weights" / "last.pt"
    common = {
        "data": str(data_yaml),
        "device": yolo_device(dc.device),
        "workers": dc.workers,
        "plots": False,
    }
    if resume and last.is_file():
        model = YOLO(str(check_weights(last, dc.trust_weights)))
        model.add_callback("on_train_start", keep_threads(torch.get_num_threads()))
        model.train(resume=str(last), **common)
        return
    if dc.model.endswith(".pt"):
        local_weights(dc.model)
    shutil.rmtree(out / "train", ignore_errors=True)
    model = YOLO(str(check_weights(dc.model, dc.trust_weights)))
    model.add_callback("on_train_start", keep_threads(torch.get_num_threads()))
    model.train(
        imgsz=dc.imgsz,
        epochs=dc.epochs,
        batch=dc.batch,
        amp=dc.amp,
        seed=dc.seed,
        project=str(out.resolve()),
        name="train",
        exist_ok=True,
        verbose=False,
        **{**common, **dc.train_args},
    )


def evaluate(YOLO: Any, weights: Path, data_yaml: Path, dc: DetectConfig, out: Path) -> dict:
    """mAP50 per class (and overall) of `weights` on the held-out images."""
    model = YOLO(str(check_weights(weights, dc.trust_weights)))
    result = model.val(
        data=str(data_yaml),
        split="val",
        imgsz=dc.imgsz,
        batch=dc.batch,
        device=yolo_device(dc.device),
        workers=dc.workers,
        plots=False,
        verbose=False,
        project=str(out.resolve()),
        name="val",
        exist_ok=True,
    )
    per_class = dict(zip(result.box.ap_class_index.tolist(), result.box.ap50.tolist(), strict=True))
    metrics = {f"map50_{name}": per_class.get(i, float("nan")) for i, name in enumerate(CLASSES)}
    metrics.update(map50=float(result.box.map50), map50_95=float(result.box.map))
    return {k: round(float(v), 4) for k, v in metrics.items()}


def train(config: Config, competition: Competition, progress: bool = True) -> Detector:
    """Train the detector on boxes.csv unless an up-to-date run exists; return it.

    A run killed mid-training resumes from ultralytics' last.pt on the next call. With
    detect.epochs 0, the weights named by detect.model are the detector (no boxes needed);
    they must name their classes `fullbody` and/or `backfin`.
    """
    out, dc = run_dir(config, competition), config.detect
    if dc.epochs == 0:  # a detector trained elsewhere, used as it is
        weights = check_weights(local_weights(dc.model), dc.trust_weights)  # refused early
        return Detector(out, weights, {"model": dc.model, "trained": False})
    key = _fingerprint(config, competition)
    weights = out / "train" / "weights" / "best.pt"
    if cache.is_done(out, key) and weights.is_file():
        return Detector(out, weights, json.loads((out / "metrics.json").read_text()))
    data_yaml = out / "dataset" / "data.yaml"
    started = cache.is_done(out / "dataset", key)  # a run of this config began: resume it
    if not started:
        data_yaml = export_dataset(competition, dc, out / "dataset", progress)
        cache.mark_done(out / "dataset", key)
    start = time.perf_counter()
    with ultralytics_env() as YOLO:
        if not (started and cache.is_done(out / "train", key)):
            _fit(YOLO, dc, data_yaml, out, resume=started)
            cache.mark_done(out / "train", key)
        seconds = time.perf_counter() - start
        metrics = evaluate(YOLO, weights, data_yaml, dc, out)
    labels = {
        p: len(list((out / "dataset" / "labels" / p).glob("*.txt"))) for p in ("train", "val")
    }
    metrics.update(
        train_seconds=round(seconds, 1),
        epochs=dc.epochs,
        imgsz=dc.imgsz,
        model=dc.model,
        train_images=labels["train"],
        val_images=labels["val"],
        weights=str(weights),
    )
    write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    cache.mark_done(out, key, **{k: v for k, v in metrics.items() if k.startswith("map")})
    return Detector(out, weights, metrics)
