"""Write and check Happywhale submission files (``image,predictions``).

Kaggle rejects or mis-scores a malformed submission only after the upload, often hours
into a run, so `validate_submission` checks locally everything that would go wrong there
and names the file, the CSV row (header is row 1) and the image, with what to do.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from wildid.data.competition import NEW_INDIVIDUAL, SUBMISSION_COLUMNS, Competition
from wildid.errors import WildidError
from wildid.io import write_csv

K = 5
HEADER = ",".join(SUBMISSION_COLUMNS)


class SubmissionError(WildidError, ValueError):
    """A submission is malformed; the message names file, row and image, and the fix."""


def format_predictions(labels: Sequence[str]) -> str:
    """Join labels with single spaces, the format Kaggle splits the predictions cell on.

    Rejects empty labels and labels holding whitespace: either would silently shift or
    split the ranks once Kaggle splits the cell.
    """
    if isinstance(labels, str):
        raise TypeError("labels must be a sequence of labels, not one string.")
    for label in labels:
        if not label or any(ch.isspace() for ch in label):
            raise SubmissionError(
                f"label {label!r} is empty or holds whitespace; labels are space-separated, "
                "so use ids without spaces."
            )
    return " ".join(labels)


def _as_labels(cell: str | Sequence[str]) -> list[str]:
    """A predictions cell as a label list; a string cell is taken as already space-joined."""
    return cell.split() if isinstance(cell, str) else list(cell)


def _pairs(rows: pd.DataFrame | Mapping[str, Sequence[str]]) -> list[tuple[str, list[str]]]:
    if isinstance(rows, pd.DataFrame):
        missing = [c for c in SUBMISSION_COLUMNS if c not in rows.columns]
        if missing:
            raise SubmissionError(
                f"rows lack column(s) {missing}; pass a frame with columns {HEADER} "
                "or a mapping image -> labels."
            )
        return [
            (str(i), _as_labels(p)) for i, p in zip(rows["image"], rows["predictions"], strict=True)
        ]
    return [(str(image), _as_labels(labels)) for image, labels in rows.items()]


def write_submission(
    rows: pd.DataFrame | Mapping[str, Sequence[str]], path: str | Path, k: int = K
) -> Path:
    """Write ``image,predictions`` atomically, rows in the order given; return the path.

    `rows` maps image -> up to k labels, best first (a DataFrame needs columns image and
    predictions, each cell a label list or an already space-joined string). Writing
    through wildid.io means a crash never leaves a truncated file that looks finished.
    """
    pairs = _pairs(rows)
    seen: set[str] = set()
    for image, labels in pairs:
        if image in seen:
            raise SubmissionError(f"image '{image}' appears twice in rows; keep one per image.")
        seen.add(image)
        if len(labels) > k:
            raise SubmissionError(
                f"image '{image}' has {len(labels)} labels; keep only the best {k}."
            )
    frame = pd.DataFrame(
        {
            "image": [image for image, _ in pairs],
            "predictions": [format_predictions(labels) for _, labels in pairs],
        },
        columns=list(SUBMISSION_COLUMNS),
    )
    return write_csv(frame, path)


# --------------------------------------------------------------------------- validation


def _read_records(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise SubmissionError(f"{path}: file not found; write it with write_submission().")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise SubmissionError(f"{path}: not a readable UTF-8 CSV ({err}).") from err


def _check_header(path: Path, records: list[list[str]]) -> None:
    found = ",".join(records[0]) if records else "(empty file)"
    if found != HEADER:
        raise SubmissionError(
            f"{path}, row 1: header is {found!r}; it must be exactly {HEADER!r}. "
            "Fix the first line (no extra columns, spaces or index column)."
        )


def _check_labels(where: str, labels: list[str], known: set[str], k: int) -> None:
    if len(labels) != k:
        raise SubmissionError(
            f"{where}: has {len(labels)} label(s), expected exactly {k}; pad with further "
            f"candidates (e.g. {NEW_INDIVIDUAL}) or drop the extras."
        )
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise SubmissionError(
                f"{where}: label '{label}' appears twice; a repeat only wastes a rank, "
                "replace it with the next-best candidate."
            )
        seen.add(label)
        if label != NEW_INDIVIDUAL and label not in known:
            raise SubmissionError(
                f"{where}: label '{label}' is neither a train individual_id nor "
                f"'{NEW_INDIVIDUAL}'; predict only ids from train.csv."
            )


def _check_row(
    path: Path, row: int, fields: list[str], test: set[str], first_row: dict[str, int]
) -> str:
    """Check one data row; return its image."""
    if len(fields) != 2:
        raise SubmissionError(
            f"{path}, row {row}: has {len(fields)} field(s), expected 2 ({HEADER}); "
            "separate labels with spaces, not commas."
        )
    image = fields[0]
    if image not in test:
        raise SubmissionError(
            f"{path}, row {row}: image '{image}' is not a test image; remove the row "
            "(only images in sample_submission.csv are scored)."
        )
    if image in first_row:
        raise SubmissionError(
            f"{path}, row {row}: image '{image}' is listed twice (first at row "
            f"{first_row[image]}); keep one row per image."
        )
    first_row[image] = row
    return image


def validate_submission(
    path: str | Path, test_images: Iterable[str], known_ids: Iterable[str], k: int = K
) -> None:
    """Raise SubmissionError at the first problem Kaggle would reject or mis-score.

    Checks: header exactly ``image,predictions``; every row an image of the test set,
    listed once, with exactly k distinct labels each a known train individual_id or
    `new_individual`; and every test image present. Blank lines are skipped, as Kaggle's
    CSV reader skips them.
    """
    path = Path(path)
    test_order = list(test_images)
    test, known = set(test_order), set(known_ids)
    records = _read_records(path)
    _check_header(path, records)
    first_row: dict[str, int] = {}
    for row, fields in enumerate(records[1:], start=2):
        if not fields:
            continue
        image = _check_row(path, row, fields, test, first_row)
        _check_labels(f"{path}, row {row}, image '{image}'", fields[1].split(), known, k)
    missing = [image for image in test_order if image not in first_row]
    if missing:
        raise SubmissionError(
            f"{path}: test image '{missing[0]}' is missing ({len(missing)} missing in all); "
            "add a row for every image in sample_submission.csv."
        )


def validate_against_competition(path: str | Path, competition: Competition, k: int = K) -> None:
    """`validate_submission` with the competition's test images and train individual_ids."""
    validate_submission(path, competition.test["image"], competition.train["individual_id"], k=k)
