"""Tests for exporting boxes.csv as a YOLO dataset and training the detector."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from wildid.crop.detector import crop
from wildid.crop.detector.train import CLASSES, export_dataset, split_images, train, yolo_label
from wildid.data.competition import DataError, load_competition


def test_yolo_label_normalises_and_clips_to_the_image() -> None:
    rows = pd.DataFrame(
        {
            "kind": ["fullbody", "backfin"],
            "x1": [-10, 50],
            "y1": [20, 10],
            "x2": [100, 70],
            "y2": [60, 30],
        }
    )
    lines = [line.split() for line in yolo_label(rows, 200, 100).splitlines()]
    assert [int(line[0]) for line in lines] == [CLASSES.index("fullbody"), CLASSES.index("backfin")]
    # fullbody clipped to x 0..100: centre 50/200, width 100/200.
    assert [float(v) for v in lines[0][1:]] == pytest.approx([0.25, 0.4, 0.5, 0.4])
    assert [float(v) for v in lines[1][1:]] == pytest.approx([0.3, 0.2, 0.1, 0.2])


def test_split_images_holds_out_whole_individuals() -> None:
    boxes = pd.DataFrame(
        {
            "image": [f"{i}.jpg" for i in range(40)],
            "individual_id": [f"id{i % 8}" for i in range(40)],
        }
    )
    parts = split_images(boxes, 0.25, seed=1)
    ids = boxes.set_index("image")["individual_id"]
    assert set(ids[parts["train"]]).isdisjoint(ids[parts["val"]])
    assert 0.2 <= len(parts["val"]) / 40 <= 0.4
    assert sorted(parts["train"] + parts["val"]) == sorted(boxes["image"])


def test_export_writes_one_label_per_train_image(
    tiny_competition: Path, tmp_path: Path, tiny_config
) -> None:
    competition = load_competition(tiny_competition)
    config = tiny_config(tiny_competition, tmp_path)
    data_yaml = export_dataset(competition, config.detect, tmp_path / "dataset", progress=False)
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == dict(enumerate(CLASSES))
    labels = sorted((tmp_path / "dataset" / "labels").glob("*/*.txt"))
    images = sorted((tmp_path / "dataset" / "images").glob("*/*.jpg"))
    assert len(labels) == len(images) == len(competition.train)  # test images never used
    assert {p.stem for p in labels} == {Path(i).stem for i in competition.train["image"]}
    first = labels[0].read_text().split()
    assert len(first) == 10 and {first[0], first[5]} == {"0", "1"}  # both kinds, 5 fields each


def test_training_needs_boxes(tiny_competition: Path, tmp_path: Path, tiny_config) -> None:
    competition = load_competition(tiny_competition)
    competition = type(competition)(competition.root, competition.train, competition.test, None)
    with pytest.raises(DataError, match="boxes.csv"):
        train(tiny_config(tiny_competition, tmp_path), competition, progress=False)


def test_missing_weights_file_is_a_clear_error(
    tiny_competition: Path, tmp_path: Path, tiny_config
) -> None:
    config = tiny_config(tiny_competition, tmp_path, "detect.model=nowhere/backfin.pt")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        train(config, load_competition(tiny_competition), progress=False)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        train(
            tiny_config(tiny_competition, tmp_path, "detect.epochs=0"),
            load_competition(tiny_competition),
            progress=False,
        )


def test_given_weights_are_used_without_training(tiny_run, tiny_config, tmp_path) -> None:
    """detect.epochs=0: a detector trained elsewhere crops a competition without boxes."""
    config = tiny_config(
        tiny_run.competition.root,
        tmp_path,
        "detect.epochs=0",
        f"detect.model={tiny_run.detector.weights}",
    )
    competition = tiny_run.competition
    no_boxes = type(competition)(competition.root, competition.train, competition.test, None)
    detector = train(config, no_boxes, progress=False)
    assert detector.weights == tiny_run.detector.weights
    assert not (tmp_path / "detect").exists()  # nothing trained or exported
    crops = crop(config, no_boxes, detector, progress=False)
    assert (crops.table["source"] == "box").mean() > 0.3


def test_trained_detector_writes_weights_and_per_class_metrics(tiny_run) -> None:
    detector = tiny_run.detector
    assert detector.weights.is_file()
    written = json.loads((detector.run_dir / "metrics.json").read_text())
    for key in ("map50_fullbody", "map50_backfin"):
        assert 0.0 <= written[key] <= 1.0
    assert written["train_images"] + written["val_images"] == len(tiny_run.competition.train)


def test_training_made_no_network_attempt(tiny_run) -> None:
    assert tiny_run.network_calls == []


def test_retraining_with_the_same_config_is_skipped(tiny_run) -> None:
    before = tiny_run.detector.weights.stat().st_mtime_ns
    again = train(tiny_run.config, tiny_run.competition, progress=False)
    assert again.weights == tiny_run.detector.weights
    assert again.weights.stat().st_mtime_ns == before
    assert again.metrics == tiny_run.detector.metrics
