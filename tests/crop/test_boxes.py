"""Crop stage: box expansion and clipping, aspect ratio, fallbacks, and the cache."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from wildid.config import CropConfig
from wildid.crop import boxes as crop_module
from wildid.crop.boxes import crop_image, expand_box, make_crops
from wildid.crop.foreground import without_background
from wildid.data.check import PhotoError
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


def test_foreground_crop_is_the_fullbody_crop_with_its_background_black(
    tiny_comp: Path, tmp_path: Path
) -> None:
    comp = load_competition(tiny_comp)
    config = _config(kinds=["fullbody", "foreground"], size=96)
    table = make_crops(comp, config, tmp_path, progress=False).table
    full = table[table["kind"] == "fullbody"].set_index("image")
    fore = table[table["kind"] == "foreground"].set_index("image")
    columns = ["x1", "y1", "x2", "y2", "source"]
    assert fore[columns].equals(full.loc[fore.index, columns])  # cut from the fullbody box
    root = next((tmp_path / "crops").iterdir())
    blacked = []
    for image in comp.train["image"]:
        photo = cv2.imread(str(comp.image_path("train", image)))
        region = tuple(int(v) for v in fore.loc[image, ["x1", "y1", "x2", "y2"]])
        expected = crop_image(without_background(photo, region), region, 96).astype(int)
        plain = cv2.imread(str(root / full.loc[image, "path"])).astype(int)
        masked = cv2.imread(str(root / fore.loc[image, "path"])).astype(int)
        assert masked.shape == plain.shape == expected.shape
        assert np.abs(masked - expected).mean() < 4  # JPEG's loss only
        blacked.append((expected == 0).all(axis=2).mean() - (plain == 0).all(axis=2).mean())
    assert np.mean(blacked) > 0.05  # background removed, not a copy of the fullbody crop


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


REAL_CROP_ONE = crop_module._crop_one


def _count_crops(monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> list:
    """Spy on `_crop_one`: the (photo, kind) of each crop made; raise after `fail_after`."""
    calls = []

    def spy(source: Path, target: Path, kind: str, *args: object) -> object:
        if fail_after is not None and len(calls) == fail_after:
            raise RuntimeError("interrupted")
        calls.append((source.name, kind))
        return REAL_CROP_ONE(source, target, kind, *args)

    monkeypatch.setattr(crop_module, "_crop_one", spy)
    return calls


def test_removed_test_photo_is_dropped_and_nothing_recropped(
    tiny_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = load_competition(tiny_copy)
    first = make_crops(comp, _config(), tmp_path / "w", progress=False)
    for name in ("sample_submission.csv", "solution.csv"):  # one test image fewer
        lines = (tiny_copy / name).read_text().splitlines()
        (tiny_copy / name).write_text("\n".join(lines[:-1]) + "\n")
    fewer = load_competition(tiny_copy)
    calls = _count_crops(monkeypatch)
    again = make_crops(fewer, _config(), tmp_path / "w", progress=False)
    assert again.root == first.root and calls == []  # the folder outlives data edits
    assert (again.table["split"] == "test").sum() == len(fewer.test) == len(comp.test) - 1
    gone = comp.test["image"].iloc[-1]
    assert gone not in set(again.table["image"])
    assert gone not in set(pd.read_csv(again.root / "crops.csv")["image"])


def test_deleted_crop_file_is_cropped_again(
    tiny_comp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = load_competition(tiny_comp)
    first = make_crops(comp, _config(), tmp_path, progress=False)
    some = first.root / first.table["path"].iloc[0]
    some.unlink()
    calls = _count_crops(monkeypatch)
    again = make_crops(comp, _config(), tmp_path, progress=False)
    assert again.root == first.root and some.is_file()
    assert calls == [(first.table["image"].iloc[0], "fullbody")]


def test_replaced_photo_is_cropped_again_and_the_rest_reused(
    tiny_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = load_competition(tiny_copy)
    config = _config(kinds=["fullbody", "whole"])
    first = make_crops(comp, config, tmp_path / "w", progress=False)
    image = comp.train["image"].iloc[3]
    photo = comp.image_path("train", image)
    (crop,) = first.paths("train", "whole", pd.Series([image]))
    before = Path(crop).read_bytes()
    cv2.imwrite(str(photo), 255 - cv2.imread(str(photo)))  # same name, other pixels
    stat = photo.stat()
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse clocks
    calls = _count_crops(monkeypatch)
    again = make_crops(comp, config, tmp_path / "w", progress=False)
    assert sorted(calls) == [(image, "fullbody"), (image, "whole")]
    assert Path(crop).read_bytes() != before
    assert len(again.table) == len(first.table)
    others = again.table["image"] != image
    assert again.table[others].equals(first.table[others])


def test_changed_box_crops_that_photo_only(
    tiny_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_crops(load_competition(tiny_copy), _config(), tmp_path / "w", progress=False)
    boxes = pd.read_csv(tiny_copy / "boxes.csv", dtype={"image": str})
    image = first.table["image"].iloc[5]
    row = boxes.index[(boxes["image"] == image) & (boxes["kind"] == "fullbody")][0]
    boxes.loc[row, "x1"] += 3  # still a valid box, 3 px narrower
    boxes.to_csv(tiny_copy / "boxes.csv", index=False)
    calls = _count_crops(monkeypatch)
    again = make_crops(load_competition(tiny_copy), _config(), tmp_path / "w", progress=False)
    assert calls == [(image, "fullbody")]
    changed = (again.table["x1"] != first.table["x1"]).to_numpy()
    assert again.table.loc[changed, "image"].tolist() == [image]


def test_unchanged_rerun_crops_and_writes_nothing(
    tiny_comp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = load_competition(tiny_comp)
    first = make_crops(comp, _config(), tmp_path, progress=False)
    files = [first.root / "crops.csv", *(first.root / p for p in first.table["path"])]
    stamps = [f.stat().st_mtime_ns for f in files]
    calls = _count_crops(monkeypatch)
    again = make_crops(comp, _config(), tmp_path, progress=False)
    assert calls == [] and again.table.equals(first.table)
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_interrupted_run_resumes_with_the_photos_left(
    tiny_comp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = load_competition(tiny_comp)
    total = len(comp.train) + len(comp.test)
    done = _count_crops(monkeypatch, fail_after=7)
    with pytest.raises(RuntimeError, match="interrupted"):
        make_crops(comp, _config(), tmp_path, progress=False)
    assert len(done) == 7
    rest = _count_crops(monkeypatch)
    crops = make_crops(comp, _config(), tmp_path, progress=False)
    assert len(rest) == total - 7 and not set(rest) & set(done)
    assert len(crops.table) == total


def test_progress_is_saved_every_few_crops(
    tiny_comp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed outright (no exception handler runs) keeps what the manifest saved."""
    comp = load_competition(tiny_comp)
    monkeypatch.setattr(crop_module, "SAVE_EVERY", 4)
    saved = []

    def spy(*args: object) -> object:
        manifest = Path(args[1]).parents[1] / "crops.csv"
        saved.append(len(pd.read_csv(manifest)) if manifest.is_file() else 0)
        return REAL_CROP_ONE(*args)

    monkeypatch.setattr(crop_module, "_crop_one", spy)
    make_crops(comp, _config(), tmp_path, progress=False)
    assert saved[:10] == [0, 0, 0, 0, 4, 4, 4, 4, 8, 8]


def test_unreadable_photo_is_named(tiny_copy: Path, tmp_path: Path) -> None:
    comp = load_competition(tiny_copy)
    broken = comp.image_path("train", comp.train["image"].iloc[0])
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(PhotoError, match=f"{broken.name}: unreadable: not an image"):
        make_crops(comp, _config(), tmp_path / "w", progress=False)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _oversize(path: Path) -> None:
    body = b"IHDR" + struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + crc)


@pytest.mark.parametrize(
    ("spoil", "fragment"),
    [(_truncate, "truncated: image file is truncated"), (_oversize, "too_large: 100000x100000")],
    ids=["truncated JPEG", "100000x100000 header"],
)
def test_truncated_or_oversized_photo_is_refused_not_cropped_grey(
    tiny_copy: Path, tmp_path: Path, spoil: Callable[[Path], None], fragment: str
) -> None:
    comp = load_competition(tiny_copy)
    broken = comp.image_path("train", comp.train["image"].iloc[0])
    spoil(broken)
    with pytest.raises(PhotoError, match=f"{broken}: {fragment}") as err:
        make_crops(comp, _config(), tmp_path / "w", progress=False)
    assert "\n" not in str(err.value)
    crops = list((tmp_path / "w").rglob(broken.name))
    assert crops == []  # no grey crop left to train on


def _without_boxes(tiny_copy: Path) -> Path:
    (tiny_copy / "boxes.csv").unlink()
    return tiny_copy


def test_mostly_fallback_is_refused_after_the_manifest_is_saved(
    tiny_copy: Path, tmp_path: Path
) -> None:
    comp = load_competition(_without_boxes(tiny_copy))
    with pytest.raises(crop_module.FallbackError) as err:
        make_crops(comp, _config(), tmp_path, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert f"fullbody train {len(comp.train)}/{len(comp.train)}" in message
    assert f"fullbody test {len(comp.test)}/{len(comp.test)}" in message
    for way in ("crop.boxes", "crop.source=detector", "wildid boxes", "crop.source=whole"):
        assert way in message
    (manifest,) = tmp_path.glob("crops/*/crops.csv")  # saved: a re-run resumes
    assert len(pd.read_csv(manifest)) == len(comp.train) + len(comp.test)


def test_whole_photos_accepted_explicitly(
    tiny_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    comp = load_competition(_without_boxes(tiny_copy))
    crops = make_crops(comp, _config(allow_fallback=True), tmp_path, progress=False)
    assert set(crops.table["source"]) == {"fallback"}
    assert "warning: crop: no box" in capsys.readouterr().err
    make_crops(comp, _config(source="whole"), tmp_path, progress=False)
    assert capsys.readouterr().err == ""  # whole photos asked for: nothing to report


def test_a_few_fallbacks_are_reported_not_refused(
    tiny_comp: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    comp = load_competition(tiny_comp)
    boxes = comp.boxes[comp.boxes["image"] != comp.test["image"].iloc[0]]
    make_crops(comp, _config(), tmp_path, boxes=boxes, progress=False)
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0
    assert f"fullbody test 1/{len(comp.test)}" in line and "train" not in line.split("(")[0]


def _box_file(path: Path, comp, shift: int = 0, kind: str | None = "fullbody") -> Path:  # noqa: ANN001
    """The competition's fullbody boxes as a YOLOv5-style file (bbox/conf), `shift` px in."""
    rows = comp.boxes[comp.boxes["kind"] == "fullbody"]
    lines = ["image,bbox,conf"] + [
        f'{r.image},"[[{r.x1 + shift} {r.y1} {r.x2} {r.y2}]]",[0.9]'
        for r in rows.itertuples(index=False)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_crop_boxes_files_crop_a_competition_without_boxes(tiny_copy: Path, tmp_path: Path) -> None:
    comp = load_competition(tiny_copy)
    path = _box_file(tmp_path / "fullbody_train.csv", comp)
    plain = make_crops(comp, _config(), tmp_path / "a", progress=False)
    (tiny_copy / "boxes.csv").unlink()
    comp = load_competition(tiny_copy)
    config = _config(boxes=[{"path": str(path), "kind": "fullbody"}])
    crops = make_crops(comp, config, tmp_path / "b", progress=False)
    assert (crops.table["source"] == "box").all()
    columns = ["image", "x1", "y1", "x2", "y2"]
    assert crops.table[columns].equals(plain.table[columns])


def test_crop_boxes_replace_boxes_csv_per_kind_earlier_entry_first(
    tiny_comp: Path, tmp_path: Path
) -> None:
    comp = load_competition(tiny_comp)
    first = _box_file(tmp_path / "first.csv", comp, shift=2)
    second = _box_file(tmp_path / "second.csv", comp, shift=4)
    kinds = ["fullbody", "backfin"]
    plain = make_crops(comp, _config(kinds=kinds, margin=0.0), tmp_path / "a", progress=False)
    config = _config(
        kinds=kinds,
        margin=0.0,
        boxes=[{"path": str(first), "kind": "fullbody"}, {"path": str(second), "kind": "fullbody"}],
    )
    crops = make_crops(comp, config, tmp_path / "b", progress=False)
    full = crops.table["kind"] == "fullbody"
    assert crops.table.loc[full, "x1"].equals(plain.table.loc[full, "x1"] + 2)  # first wins
    back = ~full  # no entry gives backfin: boxes.csv's
    assert crops.table.loc[back, ["x1", "source"]].equals(plain.table.loc[back, ["x1", "source"]])


def test_new_crop_keys_leave_the_crop_folder_key_alone(tiny_comp: Path, tmp_path: Path) -> None:
    comp = load_competition(tiny_comp)
    first = make_crops(comp, _config(), tmp_path, progress=False)
    again = make_crops(comp, _config(allow_fallback=True, boxes=[]), tmp_path, progress=False)
    assert again.root == first.root
