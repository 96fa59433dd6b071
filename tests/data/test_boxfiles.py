"""crop.boxes files: every supported format, read from small CSVs written here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from wildid.data.boxfiles import BoxFileError, read_box_file


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _rows(table) -> list[tuple]:  # noqa: ANN001
    return [
        (r.image, r.kind, r.x1, r.y1, r.x2, r.y2, None if np.isnan(r.score) else r.score)
        for r in table.itertuples(index=False)
    ]


def test_our_format_with_and_without_a_kind_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "b.csv",
        "image,kind,x1,y1,x2,y2,score\na.jpg,fullbody,1,2,30,40,0.9\na.jpg,backfin,5,6,7,8,0.5\n",
    )
    assert _rows(read_box_file(path)) == [
        ("a.jpg", "fullbody", 1, 2, 30, 40, 0.9),
        ("a.jpg", "backfin", 5, 6, 7, 8, 0.5),
    ]
    assert _rows(read_box_file(path, "backfin")) == [("a.jpg", "backfin", 5, 6, 7, 8, 0.5)]
    bare = _write(tmp_path / "c.csv", "image,x1,y1,x2,y2\na.jpg,1,2,30,40\n")
    assert _rows(read_box_file(bare, "fullbody")) == [("a.jpg", "fullbody", 1, 2, 30, 40, None)]
    with pytest.raises(BoxFileError, match="no 'kind' column"):
        read_box_file(bare)


def test_jpbremer_yolov5_detections(tmp_path: Path) -> None:
    """fullbody_*.csv / *_backfin.csv: numpy-printed `bbox`, `conf` lists, empty cells."""
    path = _write(
        tmp_path / "fullbody_test.csv",
        "bbox,conf,height,image,image_id,predictions,width\n"
        '"[[ 213  813 3054 1301]]",[0.839355],2399,a.jpg,a.jpg,x new_individual,3599\n'
        ",,2400,b.jpg,b.jpg,x new_individual,3600\n"
        "[[2399 1035 2589 1130]],[0.0066211],2399,c.jpg,c.jpg,x new_individual,3599\n",
    )
    assert _rows(read_box_file(path, "fullbody", min_score=0.01)) == [
        ("a.jpg", "fullbody", 213, 813, 3054, 1301, 0.839355)
    ]  # b: no detection, c: scored below min_score
    assert len(read_box_file(path, "backfin", min_score=0.0)) == 2
    with pytest.raises(BoxFileError, match="no stated kind"):
        read_box_file(path)


def test_python_lists_and_several_boxes_take_the_best_score(tmp_path: Path) -> None:
    """Awsaf's yolov5_*.csv style: Python lists, possibly several boxes per photo."""
    path = _write(
        tmp_path / "yolov5_train.csv",
        "image,species,individual_id,bbox,conf\n"
        'a.jpg,s,i,"[[1, 2, 30, 40], [5, 6, 70, 80]]","[0.2, 0.7]"\n'
        "b.jpg,s,i,[],[]\n",
    )
    assert _rows(read_box_file(path, "fullbody")) == [("a.jpg", "fullbody", 5, 6, 70, 80, 0.7)]


def test_detic_boxes_of_phalanx(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "train2.csv",
        "image,species,individual_id,box\na.jpg,s,i,2 116 802 665\nb.jpg,s,i,\n",
    )
    assert _rows(read_box_file(path, "fullbody")) == [("a.jpg", "fullbody", 2, 116, 802, 665, None)]


def test_image_id_column_stands_for_image(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.csv", 'image_id,bbox,conf\na.jpg,"[[1 2 3 4]]",[0.5]\n')
    assert read_box_file(path, "fullbody")["image"].tolist() == ["a.jpg"]


def test_unknown_columns_are_one_line_naming_the_file_and_the_formats(tmp_path: Path) -> None:
    path = _write(tmp_path / "odd.csv", "image,left,top,right,bottom\na.jpg,1,2,3,4\n")
    with pytest.raises(BoxFileError) as err:
        read_box_file(path, "fullbody")
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "left" in message and "x1, y1, x2, y2" in message and "bbox" in message
    assert "box (Detic" in message


def test_bad_rows_and_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(BoxFileError, match="box file not found"):
        read_box_file(tmp_path / "none.csv", "fullbody")
    three = _write(tmp_path / "t.csv", 'image,bbox\na.jpg,"[[1 2 3]]"\n')
    with pytest.raises(BoxFileError, match=r"t\.csv, row 2: .*four numbers"):
        read_box_file(three, "fullbody")
    flipped = _write(tmp_path / "f.csv", "image,kind,x1,y1,x2,y2\na.jpg,fullbody,9,2,3,4\n")
    with pytest.raises(BoxFileError, match="row 2: box has x2 <= x1"):
        read_box_file(flipped)
    whole = _write(tmp_path / "w.csv", "image,kind,x1,y1,x2,y2\na.jpg,whole,1,2,3,4\n")
    with pytest.raises(BoxFileError, match="kind 'whole'"):
        read_box_file(whole)


def test_a_read_only_file_is_read_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "input"
    folder.mkdir()
    path = _write(folder / "b.csv", "image,box\na.jpg,1 2 3 4\n")
    os.chmod(path, 0o444)
    os.chmod(folder, 0o555)
    try:
        assert len(read_box_file(path, "backfin")) == 1
        assert sorted(p.name for p in folder.iterdir()) == ["b.csv"]
    finally:
        os.chmod(folder, 0o755)
