"""The Happywhale layout: each way it can be wrong raises DataError saying where and what."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from wildid.data.competition import (
    NEW_INDIVIDUAL,
    DataError,
    load_competition,
    normalise_species,
    write_tables,
)

TRAIN = "image,species,individual_id\na.jpg,beluga,w1\nb.jpg,kiler_whale,w2\nc.jpg,beluga,w1\n"
SAMPLE = "image,predictions\nt1.jpg,new_individual w1 w2\nt2.jpg,new_individual w1 w2\n"


def _layout(root: Path, train: str = TRAIN, sample: str = SAMPLE, images: bool = True) -> Path:
    """A minimal competition folder; image files are empty (only their names are checked)."""
    (root / "train_images").mkdir(parents=True)
    (root / "test_images").mkdir()
    (root / "train.csv").write_text(train, encoding="utf-8")
    (root / "sample_submission.csv").write_text(sample, encoding="utf-8")
    if images:
        for split, text in (("train", train), ("test", sample)):
            for line in text.splitlines()[1:]:
                if line.split(",")[0]:
                    (root / f"{split}_images" / line.split(",")[0]).touch()
    return root


def test_valid_layout_loads_and_normalises_species(tmp_path: Path) -> None:
    comp = load_competition(_layout(tmp_path / "c"))
    assert list(comp.train.columns) == ["image", "species", "individual_id"]
    assert comp.train["species"].tolist() == ["beluga_whale", "killer_whale", "beluga_whale"]
    assert comp.test["image"].tolist() == ["t1.jpg", "t2.jpg"]
    assert not comp.has_solution and comp.boxes is None
    assert comp.image_path("test", "t1.jpg") == tmp_path / "c" / "test_images" / "t1.jpg"


def test_normalise_species_merges_every_known_typo() -> None:
    raw = pd.Series(
        ["bottlenose_dolpin", "kiler_whale", "beluga", "globis", "pilot_whale", "humpback_whale"]
    )
    assert normalise_species(raw).tolist() == [
        "bottlenose_dolphin",
        "killer_whale",
        "beluga_whale",
        "short_finned_pilot_whale",
        "short_finned_pilot_whale",
        "humpback_whale",
    ]


def test_missing_folder_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"competition folder not found.*wildid synth"):
        load_competition(tmp_path / "nowhere")


def test_missing_table(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c")
    (root / "sample_submission.csv").unlink()
    with pytest.raises(DataError, match=r"sample_submission\.csv: file not found"):
        load_competition(root)


def test_missing_column_names_it_and_what_was_found(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c", train="image,species,id\na.jpg,beluga,w1\n")
    with pytest.raises(DataError) as info:
        load_competition(root)
    message = str(info.value)
    assert "train.csv: missing column(s) ['individual_id']" in message
    assert "found ['image', 'species', 'id']" in message


def test_empty_cell_names_row_and_column(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c", train=TRAIN + "d.jpg,beluga, \n")
    with pytest.raises(DataError, match=r"train\.csv, row 5: column 'individual_id' is empty"):
        load_competition(root)


def test_duplicate_row_names_row_and_image(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c", train=TRAIN + "b.jpg,beluga,w3\n")
    with pytest.raises(DataError, match=r"train\.csv, row 5: image 'b\.jpg' is listed twice"):
        load_competition(root)


def test_duplicate_test_row(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c", sample=SAMPLE + "t1.jpg,w1\n")
    with pytest.raises(DataError, match=r"sample_submission\.csv, row 4: image 't1\.jpg'"):
        load_competition(root)


def test_missing_image_names_the_first_and_the_count(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c")
    (root / "train_images" / "b.jpg").unlink()
    (root / "train_images" / "c.jpg").unlink()
    with pytest.raises(DataError, match=r"train\.csv: 2 image\(s\) not found .* first 'b\.jpg'"):
        load_competition(root)
    assert len(load_competition(root, check_images=False).train) == 3  # validate-only mode


def test_missing_image_folder(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c")
    for image in (root / "test_images").iterdir():
        image.unlink()
    (root / "test_images").rmdir()
    with pytest.raises(DataError, match=r"test_images: folder not found"):
        load_competition(root)


@pytest.mark.parametrize(
    ("train", "sample", "match"),
    [
        ("image,species,individual_id\n", SAMPLE, r"train\.csv: no rows; the train split"),
        (TRAIN, "image,predictions\n", r"sample_submission\.csv: no rows; the test split"),
    ],
)
def test_empty_split(tmp_path: Path, train: str, sample: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_competition(_layout(tmp_path / "c", train=train, sample=sample))


def test_image_in_both_splits(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c", sample="image,predictions\nt1.jpg,w1\nc.jpg,w1\n")
    with pytest.raises(DataError, match=r"image 'c\.jpg' is in both train\.csv and sample_sub"):
        load_competition(root)


def test_unreadable_csv(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c")
    (root / "train.csv").write_bytes(b"image,species,individual_id\n\xff\xfe,a,b\n")
    with pytest.raises(DataError, match=r"train\.csv: not a readable CSV"):
        load_competition(root)


def test_solution_is_merged_into_test_with_species_fixed(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c")
    (root / "solution.csv").write_text(
        "image,species,individual_id\nt2.jpg,beluga,new_individual\nt1.jpg,kiler_whale,w2\n"
    )
    comp = load_competition(root)
    assert comp.has_solution
    assert comp.test.to_dict("records") == [
        {"image": "t1.jpg", "species": "killer_whale", "individual_id": "w2"},
        {"image": "t2.jpg", "species": "beluga_whale", "individual_id": NEW_INDIVIDUAL},
    ]


def test_solution_must_list_the_test_images(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c")
    (root / "solution.csv").write_text("image,species,individual_id\nt1.jpg,beluga,w1\n")
    with pytest.raises(DataError, match=r"solution\.csv: image 't2\.jpg' is in only one"):
        load_competition(root)


def test_boxes_are_read_and_checked(tmp_path: Path) -> None:
    root = _layout(tmp_path / "c")
    (root / "boxes.csv").write_text("image,kind,x1,y1,x2,y2\na.jpg,fullbody,1,2,30,20\n")
    assert load_competition(root).boxes.to_dict("records") == [
        {"image": "a.jpg", "kind": "fullbody", "x1": 1, "y1": 2, "x2": 30, "y2": 20}
    ]
    (root / "boxes.csv").write_text(
        "image,kind,x1,y1,x2,y2\na.jpg,fullbody,1,2,30,20\nb.jpg,backfin,5,5,5,9\n"
    )
    with pytest.raises(DataError, match=r"boxes\.csv, row 3: box has x2 <= x1"):
        load_competition(root)
    (root / "boxes.csv").write_text("image,x1,y1,x2,y2\na.jpg,1,2,30,20\n")
    with pytest.raises(DataError, match=r"boxes\.csv: missing column\(s\) \['kind'\]"):
        load_competition(root)


def test_write_tables_round_trips_and_marks_new_individuals(tmp_path: Path) -> None:
    train = pd.DataFrame(
        {
            "image": ["a.jpg", "b.jpg", "c.jpg"],
            "species": ["x", "x", "y"],
            "individual_id": ["w1", "w1", "w2"],
        }
    )
    test = pd.DataFrame(
        {"image": ["t1.jpg", "t2.jpg"], "species": ["x", "y"], "individual_id": ["w1", "w9"]}
    )
    root = tmp_path / "c"
    write_tables(root, train, test)
    for split, table in (("train", train), ("test", test)):
        (root / f"{split}_images").mkdir(exist_ok=True)
        for image in table["image"]:
            (root / f"{split}_images" / image).touch()
    comp = load_competition(root)
    assert comp.test["individual_id"].tolist() == ["w1", NEW_INDIVIDUAL]
    sample = pd.read_csv(root / "sample_submission.csv")
    assert sample["predictions"].tolist() == ["new_individual w1 w2"] * 2  # commonest first
