"""Submission writing and one test per validation failure mode."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from wildid.data.competition import Competition
from wildid.evaluation.submission import (
    SubmissionError,
    format_predictions,
    validate_against_competition,
    validate_submission,
    write_submission,
)

TEST = ["a.jpg", "b.jpg"]
KNOWN = ["w1", "w2", "w3", "w4", "w5"]
GOOD_A = "a.jpg,w1 w2 w3 w4 new_individual"
GOOD_B = "b.jpg,new_individual w1 w2 w3 w4"


def _file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "submission.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _check(path: Path) -> None:
    validate_submission(path, TEST, KNOWN)


def test_format_predictions() -> None:
    assert format_predictions(["w1", "new_individual", "w2"]) == "w1 new_individual w2"
    assert format_predictions([]) == ""
    with pytest.raises(SubmissionError, match="whitespace"):
        format_predictions(["w 1"])


def test_write_submission_from_mapping_keeps_order(tmp_path: Path) -> None:
    rows = {"b.jpg": ["new_individual", "w1", "w2", "w3", "w4"], "a.jpg": ["w1", "w2"]}
    path = write_submission(rows, tmp_path / "out" / "submission.csv")
    text = path.read_text(encoding="utf-8")
    assert text == "image,predictions\nb.jpg,new_individual w1 w2 w3 w4\na.jpg,w1 w2\n"


def test_write_submission_from_frame_round_trips_validation(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "image": ["a.jpg", "b.jpg"],
            "predictions": [["w1", "w2", "w3", "w4", "new_individual"], GOOD_B.split(",")[1]],
        }
    )
    path = write_submission(frame, tmp_path / "submission.csv")
    assert path.read_text(encoding="utf-8").splitlines()[1:] == [GOOD_A, GOOD_B]
    _check(path)


def test_write_submission_rejects_more_than_five_labels(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="'a.jpg' has 6 labels; keep only the best 5"):
        write_submission({"a.jpg": [*KNOWN, "new_individual"]}, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_valid_file_passes(tmp_path: Path) -> None:
    _check(_file(tmp_path, "image,predictions", GOOD_B, "", GOOD_A))


@pytest.mark.parametrize("header", ["image,prediction", "image,predictions,extra", "Id,image"])
def test_wrong_header(tmp_path: Path, header: str) -> None:
    with pytest.raises(SubmissionError, match=r"submission\.csv, row 1: header is .*exactly"):
        _check(_file(tmp_path, header, GOOD_A, GOOD_B))


def test_missing_header(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match=r"row 1: header is 'a\.jpg,w1 w2"):
        _check(_file(tmp_path, GOOD_A, GOOD_B))
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(SubmissionError, match=r"empty\.csv, row 1: header is '\(empty file\)'"):
        _check(empty)


def test_image_not_in_test_set(tmp_path: Path) -> None:
    path = _file(tmp_path, "image,predictions", GOOD_A, GOOD_B, "z.jpg,w1 w2 w3 w4 w5")
    with pytest.raises(SubmissionError, match=r"row 4: image 'z\.jpg' is not a test image"):
        _check(path)


def test_image_listed_twice(tmp_path: Path) -> None:
    path = _file(tmp_path, "image,predictions", GOOD_A, GOOD_B, GOOD_A)
    with pytest.raises(
        SubmissionError, match=r"row 4: image 'a\.jpg' is listed twice \(first at row 2\)"
    ):
        _check(path)


def test_test_image_missing(tmp_path: Path) -> None:
    path = _file(tmp_path, "image,predictions", GOOD_A)
    with pytest.raises(SubmissionError, match=r"test image 'b\.jpg' is missing \(1 missing"):
        _check(path)


@pytest.mark.parametrize("labels", ["w1 w2 w3 w4", "w1 w2 w3 w4 w5 new_individual", ""])
def test_row_without_five_labels(tmp_path: Path, labels: str) -> None:
    path = _file(tmp_path, "image,predictions", GOOD_A, f"b.jpg,{labels}")
    n = len(labels.split())
    with pytest.raises(
        SubmissionError, match=rf"row 3, image 'b\.jpg': has {n} label\(s\), expected exactly 5"
    ):
        _check(path)


def test_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = _file(tmp_path, "image,predictions", GOOD_A, "b.jpg,w1,w2,w3,w4,w5")
    with pytest.raises(SubmissionError, match=r"row 3: has 6 field\(s\), expected 2"):
        _check(path)


def test_duplicate_labels_in_row(tmp_path: Path) -> None:
    path = _file(tmp_path, "image,predictions", "a.jpg,w1 w2 w1 w3 w4", GOOD_B)
    with pytest.raises(SubmissionError, match=r"row 2, image 'a\.jpg': label 'w1' appears twice"):
        _check(path)


def test_unknown_label(tmp_path: Path) -> None:
    path = _file(tmp_path, "image,predictions", GOOD_A, "b.jpg,w1 w2 w3 w4 w9")
    with pytest.raises(
        SubmissionError,
        match=r"row 3, image 'b\.jpg': label 'w9' is neither a train individual_id nor",
    ):
        _check(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="file not found"):
        _check(tmp_path / "nope.csv")


def test_validate_against_competition(tmp_path: Path) -> None:
    train = pd.DataFrame({"image": ["t1.jpg"] * 5, "species": ["orca"] * 5, "individual_id": KNOWN})
    test = pd.DataFrame({"image": TEST})
    competition = Competition(root=tmp_path, train=train, test=test, boxes=None)
    validate_against_competition(_file(tmp_path, "image,predictions", GOOD_A, GOOD_B), competition)
    with pytest.raises(SubmissionError, match="missing"):
        validate_against_competition(_file(tmp_path, "image,predictions", GOOD_A), competition)
