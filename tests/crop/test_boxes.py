"""Crop stage: box expansion and clipping, aspect ratio, fallbacks, and the cache."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from wildid.config import CropConfig
from wildid.crop import boxes as crop_module
from wildid.crop.boxes import crop_image, expand_box, make_crops
from wildid.data.competition import load_competition


def test_expand_box_adds_the_margin_on_each_side() -> None:
    assert expand_box((20, 10, 60, 30), 0.1, 100, 100) == (16, 8, 64, 32)
    assert expand_box((20, 10, 60, 30), 0.0, 100, 100) == (20, 10, 60, 30)


def test_expand_box_is_clipped_to_the_photo() -> None:
    assert expand_box((2, 1, 98, 49), 0.5, 100, 50) == (0, 0, 100, 50)
    assert expand_box((0, 0, 10, 10), 0.2, 8, 8) == (0, 0, 8, 8)


def test_crop_image_keeps_aspect_and_never_upscales() -> None:
    image = np.zeros((200, 400, 3), np.uint8)
    assert crop_image(image, (0, 0, 300, 150), 100).shape == (50, 100, 3)
    assert crop_image(image, (10, 20, 60, 180), 80).shape == (80, 25, 3)  # tall box
    assert crop_image(image, (0, 0, 40, 30), 256).shape == (30, 40, 3)  # small: as is


def test_crop_image_cuts_the_box_region() -> None:
    image = np.zeros((50, 50, 3), np.uint8)
    image[10:20, 30:40] = 255
    out = crop_image(image, (30, 10, 40, 20), 64)
    assert out.shape == (10, 10, 3) and (out == 255).all()


def _config(**changes: object) -> CropConfig:
    return CropConfig(**{"kinds": ["fullbody"], "size": 48, **changes})


def test_crops_follow_boxes_and_record_their_source(tiny_comp: Path, tmp_path: Path) -> None:
    comp = load_competition(tiny_comp)
    crops = make_crops(comp, _config(kinds=["fullbody", "whole"]), tmp_path, progress=False)
    table = crops.table
    assert len(table) == 2 * (len(comp.train) + len(comp.test))
    assert set(table.loc[table["kind"] == "fullbody", "source"]) == {"box"}
    assert set(table.loc[table["kind"] == "whole", "source"]) == {"whole"}
    image = comp.train["image"].iloc[0]
    (path,) = crops.paths("train", "fullbody", comp.train["image"].head(1))
    crop = cv2.imread(path)
    assert max(crop.shape[:2]) <= 48
    box = comp.boxes[(comp.boxes["image"] == image) & (comp.boxes["kind"] == "fullbody")].iloc[0]
    row = table[(table["image"] == image) & (table["kind"] == "fullbody")].iloc[0]
    height, width = cv2.imread(str(comp.image_path("train", image))).shape[:2]
    expected = expand_box((box.x1, box.y1, box.x2, box.y2), 0.1, width, height)
    assert (row.x1, row.y1, row.x2, row.y2) == expected


def test_missing_box_falls_back_to_the_whole_photo(tiny_comp: Path, tmp_path: Path) -> None:
    comp = load_competition(tiny_comp)
    dropped = comp.test["image"].iloc[0]
    boxes = comp.boxes[comp.boxes["image"] != dropped]
    crops = make_crops(comp, _config(), tmp_path, boxes=boxes, progress=False)
    row = crops.table[crops.table["image"] == dropped].iloc[0]
    height, width = cv2.imread(str(comp.image_path("test", dropped))).shape[:2]
    assert row.source == "fallback"
    assert (row.x1, row.y1, row.x2, row.y2) == (0, 0, width, height)
    assert (crops.table["source"] == "fallback").sum() == 1


def test_degenerate_box_falls_back(tiny_comp: Path, tmp_path: Path) -> None:
    comp = load_competition(tiny_comp)
    boxes = comp.boxes.copy()
    first = boxes.index[
        (boxes["image"] == comp.train["image"].iloc[0]) & (boxes["kind"] == "fullbody")
    ][0]
    boxes.loc[first, ["x1", "x2"]] = [10, 11]  # 1 px wide: useless even with a margin
    crops = make_crops(comp, _config(margin=0.0), tmp_path, boxes=boxes, progress=False)
    assert crops.table.iloc[0]["source"] == "fallback"


def test_source_whole_ignores_boxes(tiny_comp: Path, tmp_path: Path) -> None:
    comp = load_competition(tiny_comp)
    crops = make_crops(comp, _config(source="whole"), tmp_path, progress=False)
    assert set(crops.table["source"]) == {"fallback"}  # fullbody asked, no boxes used


def test_rerun_is_skipped_and_config_change_is_not(
    tiny_comp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = load_competition(tiny_comp)
    first = make_crops(comp, _config(), tmp_path, progress=False)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("cropped again although the cache is up to date")

    monkeypatch.setattr(crop_module, "_crop_one", fail)
    again = make_crops(comp, _config(), tmp_path, progress=False)
    assert again.root == first.root
    assert again.table.equals(first.table)
    with pytest.raises(AssertionError, match="cropped again"):
        make_crops(comp, _config(size=40), tmp_path, progress=False)


def test_changed_test_set_is_cropped_again(tiny_copy: Path, tmp_path: Path) -> None:
    comp = load_competition(tiny_copy)
    first = make_crops(comp, _config(), tmp_path / "w", progress=False)
    for name in ("sample_submission.csv", "solution.csv"):  # one test image fewer
        lines = (tiny_copy / name).read_text().splitlines()
        (tiny_copy / name).write_text("\n".join(lines[:-1]) + "\n")
    fewer = load_competition(tiny_copy)
    again = make_crops(fewer, _config(), tmp_path / "w", progress=False)
    assert again.root != first.root
    assert (again.table["split"] == "test").sum() == len(fewer.test) == len(comp.test) - 1


def test_unfinished_crop_run_is_redone(tiny_comp: Path, tmp_path: Path) -> None:
    comp = load_competition(tiny_comp)
    first = make_crops(comp, _config(), tmp_path, progress=False)
    (first.root / "stage.json").unlink()  # as if killed before the end
    some = first.root / first.table["path"].iloc[0]
    some.unlink()
    again = make_crops(comp, _config(), tmp_path, progress=False)
    assert again.root == first.root and some.is_file()


def test_unreadable_photo_is_named(tiny_copy: Path, tmp_path: Path) -> None:
    comp = load_competition(tiny_copy)
    broken = comp.image_path("train", comp.train["image"].iloc[0])
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match=f"{broken.name}: cannot read image"):
        make_crops(comp, _config(), tmp_path / "w", progress=False)
