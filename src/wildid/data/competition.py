"""The Happywhale competition layout: read it, validate it, and write it.

Layout (what Kaggle ships, and what `wildid synth` and `wildid import` write)::

    DIR/train.csv              image, species, individual_id
    DIR/train_images/<image>
    DIR/test_images/<image>
    DIR/sample_submission.csv  image, predictions
    DIR/solution.csv           image, species, individual_id   (optional: local scoring)
    DIR/boxes.csv              image, kind, x1, y1, x2, y2       (optional: known crops)

Every way the layout can be wrong raises `DataError` naming the file, the row or the
column, and what to do about it, because a Kaggle user meets these errors an hour into
a run otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wildid.errors import WildidError
from wildid.io import write_csv

NEW_INDIVIDUAL = "new_individual"
TRAIN_COLUMNS = ("image", "species", "individual_id")
SUBMISSION_COLUMNS = ("image", "predictions")
BOX_COLUMNS = ("image", "kind", "x1", "y1", "x2", "y2")

# Typos and synonyms in the competition's train.csv, merged as every top solution did.
SPECIES_FIXES = {
    "bottlenose_dolpin": "bottlenose_dolphin",
    "kiler_whale": "killer_whale",
    "beluga": "beluga_whale",
    "globis": "short_finned_pilot_whale",
    "pilot_whale": "short_finned_pilot_whale",
}


class DataError(WildidError, ValueError):
    """The competition folder is not usable; the message says where and how to fix it."""


@dataclass(frozen=True)
class Competition:
    """A validated competition folder. Tables are pandas frames with string columns."""

    root: Path
    train: pd.DataFrame  # image, species, individual_id
    test: pd.DataFrame  # image (+ species, individual_id when solution.csv is present)
    boxes: pd.DataFrame | None  # image, kind, x1, y1, x2, y2

    @property
    def has_solution(self) -> bool:
        return "individual_id" in self.test.columns

    def image_path(self, split: str, image: str) -> Path:
        return self.root / f"{split}_images" / image


def normalise_species(species: pd.Series) -> pd.Series:
    """Merge the known species typos and synonyms (see SPECIES_FIXES)."""
    return species.replace(SPECIES_FIXES)


def read_csv_file(path: Path, **kwargs: object) -> pd.DataFrame:
    """pandas.read_csv, any unreadable file (empty, binary, garbled) a one-line DataError."""
    try:
        return pd.read_csv(path, **kwargs)  # type: ignore[call-overload]
    except pd.errors.EmptyDataError as err:
        raise DataError(
            f"{path}: empty file (zero bytes or no header line); re-download or re-write it."
        ) from err
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable CSV ({reason}).") from err
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err}).") from err


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found. Expected the Happywhale layout (see README).")
    df = read_csv_file(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {list(df.columns)}. "
            f"The header must hold {list(columns)}."
        )
    for column in columns:
        empty = df.index[df[column].str.strip() == ""]
        if len(empty):
            row = int(empty[0]) + 2  # 1-based, after the header line
            raise DataError(f"{path}, row {row}: column '{column}' is empty.")
    duplicated = df.index[df["image"].duplicated()]
    if len(duplicated):
        row = int(duplicated[0]) + 2
        raise DataError(
            f"{path}, row {row}: image '{df.at[duplicated[0], 'image']}' is listed twice; "
            "each image must appear once."
        )
    return df


def _check_images(root: Path, split: str, images: pd.Series, table: Path) -> None:
    folder = root / f"{split}_images"
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (images listed in {table.name}).")
    on_disk = {p.name for p in folder.iterdir()}
    absent = [name for name in images if name not in on_disk]
    if absent:
        raise DataError(
            f"{table}: {len(absent)} image(s) not found in {folder}, "
            f"first '{absent[0]}'. Re-download or re-extract the images."
        )


def read_boxes(path: Path) -> pd.DataFrame:
    df = read_csv_file(path, dtype={"image": str, "kind": str})
    missing = [c for c in BOX_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; need {list(BOX_COLUMNS)}.")
    for column in ("x1", "y1", "x2", "y2"):
        numbers = pd.to_numeric(df[column], errors="coerce")
        bad = df.index[numbers.isna()]
        if len(bad):
            raise DataError(
                f"{path}, row {int(bad[0]) + 2}: column '{column}' is not a number "
                f"('{df.at[bad[0], column]}')."
            )
        df[column] = numbers
    bad = df.index[(df["x2"] <= df["x1"]) | (df["y2"] <= df["y1"])]
    if len(bad):
        raise DataError(f"{path}, row {int(bad[0]) + 2}: box has x2 <= x1 or y2 <= y1.")
    return df


def load_competition(root: str | Path, check_images: bool = True) -> Competition:
    """Read and validate a competition folder; raise DataError naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: competition folder not found. Create one with `wildid synth {root}`, "
            f"`wildid import CATALOGUE {root}`, or download Happywhale with the kaggle CLI."
        )
    train = _read_table(root / "train.csv", TRAIN_COLUMNS)[list(TRAIN_COLUMNS)]
    if train.empty:
        raise DataError(f"{root / 'train.csv'}: no rows; the train split is empty.")
    train["species"] = normalise_species(train["species"])
    test = _read_table(root / "sample_submission.csv", SUBMISSION_COLUMNS)[["image"]]
    if test.empty:
        raise DataError(f"{root / 'sample_submission.csv'}: no rows; the test split is empty.")
    overlap = set(train["image"]) & set(test["image"])
    if overlap:
        raise DataError(
            f"{root}: image '{sorted(overlap)[0]}' is in both train.csv and "
            "sample_submission.csv; file names must be unique across splits."
        )
    solution_path = root / "solution.csv"
    if solution_path.is_file():
        solution = _read_table(solution_path, TRAIN_COLUMNS)[list(TRAIN_COLUMNS)]
        solution["species"] = normalise_species(solution["species"])
        unknown = set(test["image"]) ^ set(solution["image"])
        if unknown:
            raise DataError(
                f"{solution_path}: image '{sorted(unknown)[0]}' is in only one of "
                "solution.csv and sample_submission.csv; they must list the same images."
            )
        test = test.merge(solution, on="image", how="left")
    if check_images:
        _check_images(root, "train", train["image"], root / "train.csv")
        _check_images(root, "test", test["image"], root / "sample_submission.csv")
    boxes_path = root / "boxes.csv"
    boxes = read_boxes(boxes_path) if boxes_path.is_file() else None
    return Competition(root=root, train=train, test=test, boxes=boxes)


def write_tables(
    root: str | Path,
    train: pd.DataFrame,
    test: pd.DataFrame,
    boxes: pd.DataFrame | None = None,
) -> None:
    """Write train.csv, sample_submission.csv, solution.csv (and boxes.csv) for a layout.

    `train` and `test` hold image, species, individual_id; test ids of individuals absent
    from train are rewritten to `new_individual` in solution.csv, as the competition does.
    Rows are written in the order given, so a seeded generator gives byte-identical files.
    """
    root = Path(root)
    write_csv(train[list(TRAIN_COLUMNS)], root / "train.csv")
    known = set(train["individual_id"])
    solution = test[list(TRAIN_COLUMNS)].copy()
    solution.loc[~solution["individual_id"].isin(known), "individual_id"] = NEW_INDIVIDUAL
    write_csv(solution, root / "solution.csv")
    counts = train.groupby("individual_id").size().reset_index(name="n")
    commonest = counts.sort_values(["n", "individual_id"], ascending=[False, True])
    default = " ".join([NEW_INDIVIDUAL, *commonest["individual_id"].head(4)])
    sample = pd.DataFrame({"image": test["image"], "predictions": default})
    write_csv(sample, root / "sample_submission.csv")
    if boxes is not None:
        write_csv(boxes[list(BOX_COLUMNS)], root / "boxes.csv")
