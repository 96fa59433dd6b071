"""Hand-computed checks of MAP@5 (Kaggle's Happywhale formula) and BAKS/BAUS."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.evaluation.metrics import (
    ScoreError,
    average_precision_at_k,
    baks,
    baks_baus_gmean,
    baus,
    map_at_k,
    score_breakdown,
    score_submission,
    top_k_accuracy,
)

FILLER = ["f1", "f2", "f3", "f4", "f5"]


def _with_truth_at(rank: int, truth: str) -> list[str]:
    preds = list(FILLER)
    preds[rank - 1] = truth
    return preds


@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5])
def test_correct_at_rank_scores_one_over_rank(rank: int) -> None:
    assert average_precision_at_k(_with_truth_at(rank, "w1"), "w1") == pytest.approx(1 / rank)


@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5])
def test_new_individual_truth_at_each_rank(rank: int) -> None:
    preds = _with_truth_at(rank, NEW_INDIVIDUAL)
    assert average_precision_at_k(preds, NEW_INDIVIDUAL) == pytest.approx(1 / rank)


def test_absent_truth_scores_zero() -> None:
    assert average_precision_at_k(FILLER, "w1") == 0.0


def test_duplicates_shift_rank_by_kaggle_formula() -> None:
    # Kaggle: 1 / (predictions[:5].index(label) + 1); "b" is at index 2 -> 1/3, not 1/2.
    assert average_precision_at_k(["a", "a", "b", "c", "d"], "b") == pytest.approx(1 / 3)


def test_repeated_correct_label_counts_once() -> None:
    assert average_precision_at_k(["x", "b", "b", "b", "b"], "b") == pytest.approx(1 / 2)


def test_predictions_beyond_k_are_ignored() -> None:
    assert average_precision_at_k([*FILLER, "w1"], "w1") == 0.0
    assert average_precision_at_k(["a", "b", "w1", "c", "d", "e"], "w1", k=2) == 0.0
    assert map_at_k([[*FILLER, "w1", "w1"]], ["w1"]) == 0.0


def test_empty_predictions_score_zero() -> None:
    assert average_precision_at_k([], "w1") == 0.0
    assert map_at_k([[]], [NEW_INDIVIDUAL]) == 0.0


def test_multi_image_mean_by_hand() -> None:
    predictions = [
        ["w1", "w2", "w3", "w4", "w5"],  # truth w1 at rank 1 -> 1
        ["w1", "w2", "w3", "w4", "w5"],  # truth w3 at rank 3 -> 1/3
        ["w1", NEW_INDIVIDUAL, "w3", "w4", "w5"],  # new_individual at rank 2 -> 1/2
        ["w1", "w2", "w3", "w4", "w5"],  # truth w9 absent -> 0
    ]
    truths = ["w1", "w3", NEW_INDIVIDUAL, "w9"]
    expected = (1 + 1 / 3 + 1 / 2 + 0) / 4  # = 11/24
    assert map_at_k(predictions, truths) == pytest.approx(expected)
    assert map_at_k(predictions, truths) == pytest.approx(11 / 24)


def test_top_k_accuracy_by_hand() -> None:
    predictions = [["a", "b"], ["b", "a"], ["c", "d"], ["x", "y", "z", "q", "r", "a"]]
    truths = ["a", "a", "a", "a"]
    assert top_k_accuracy(predictions, truths) == pytest.approx(2 / 4)
    assert top_k_accuracy(predictions, truths, k=1) == pytest.approx(1 / 4)


def test_map_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="prediction lists"):
        map_at_k([["a"]], ["a", "b"])
    with pytest.raises(ValueError, match="no images"):
        map_at_k([], [])
    with pytest.raises(ValueError, match="k must be"):
        map_at_k([["a"]], ["a"], k=0)


# --------------------------------------------------------------------------- files


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def solution(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "solution.csv",
        "image,species,individual_id\n"
        "a.jpg,beluga,w1\n"
        "b.jpg,beluga_whale,new_individual\n"
        "c.jpg,humpback_whale,w2\n"
        "d.jpg,humpback_whale,new_individual\n",
    )


@pytest.fixture
def submission(tmp_path: Path) -> Path:
    # a: w1 rank 1 -> 1; b: new at rank 2 -> 1/2; c: w2 rank 4 -> 1/4; d: absent -> 0
    return _write(
        tmp_path / "submission.csv",
        "image,predictions\n"
        "d.jpg,w1 w2 w3 w4 w5\n"
        "c.jpg,w1 w3 w4 w2 new_individual\n"
        "b.jpg,w1 new_individual w2 w3 w4\n"
        "a.jpg,w1 new_individual w2 w3 w4\n",
    )


def test_score_submission_end_to_end(submission: Path, solution: Path) -> None:
    assert score_submission(submission, solution) == pytest.approx((1 + 1 / 2 + 1 / 4) / 4)


def test_score_breakdown_by_species_and_known_vs_new(submission: Path, solution: Path) -> None:
    table = score_breakdown(submission, solution).set_index("species")
    # "beluga" is normalised to "beluga_whale", so both beluga rows form one species.
    assert list(table.index) == ["beluga_whale", "humpback_whale", "all"]
    assert table.loc["beluga_whale", "images"] == 2
    assert table.loc["beluga_whale", "map5"] == pytest.approx((1 + 1 / 2) / 2)
    assert table.loc["humpback_whale", "map5"] == pytest.approx((1 / 4 + 0) / 2)
    assert table.loc["all", "map5"] == pytest.approx(1.75 / 4)
    assert table.loc["all", "known_images"] == 2
    assert table.loc["all", "known_map5"] == pytest.approx((1 + 1 / 4) / 2)
    assert table.loc["all", "new_images"] == 2
    assert table.loc["all", "new_map5"] == pytest.approx((1 / 2 + 0) / 2)


def test_score_breakdown_subset_without_images_is_nan(tmp_path: Path) -> None:
    sol = _write(tmp_path / "sol.csv", "image,species,individual_id\na.jpg,orca,w1\n")
    sub = _write(tmp_path / "sub.csv", "image,predictions\na.jpg,w2 w1\n")
    row = score_breakdown(sub, sol).set_index("species").loc["orca"]
    assert row["known_map5"] == pytest.approx(0.5)
    assert row["new_images"] == 0 and math.isnan(row["new_map5"])


def test_score_submission_missing_image_names_file_and_image(
    tmp_path: Path, solution: Path
) -> None:
    sub = _write(
        tmp_path / "submission.csv",
        "image,predictions\na.jpg,w1\nb.jpg,w1\nd.jpg,w1\n",
    )
    with pytest.raises(ScoreError, match=r"submission\.csv: lacks image 'c\.jpg'"):
        score_submission(sub, solution)


def test_score_submission_extra_image_names_file_and_image(
    submission: Path, solution: Path
) -> None:
    with open(submission, "a", encoding="utf-8") as handle:
        handle.write("z.jpg,w1\n")
    with pytest.raises(ScoreError, match=r"submission\.csv: image 'z\.jpg'.*not in"):
        score_submission(submission, solution)


def test_score_submission_duplicate_and_missing_column(tmp_path: Path, solution: Path) -> None:
    dup = _write(tmp_path / "dup.csv", "image,predictions\na.jpg,w1\na.jpg,w2\n")
    with pytest.raises(ScoreError, match=r"dup\.csv, row 3: image 'a\.jpg' is listed twice"):
        score_submission(dup, solution)
    bad = _write(tmp_path / "bad.csv", "image,labels\na.jpg,w1\n")
    with pytest.raises(ScoreError, match=r"bad\.csv: missing column\(s\) \['predictions'\]"):
        score_submission(bad, solution)
    with pytest.raises(ScoreError, match="not found"):
        score_submission(tmp_path / "absent.csv", solution)


# --------------------------------------------------------------------------- BAKS / BAUS


def test_baks_balances_over_known_individuals() -> None:
    truths = ["A", "A", "A", "B", NEW_INDIVIDUAL, NEW_INDIVIDUAL, NEW_INDIVIDUAL]
    preds = ["A", "A", "B", NEW_INDIVIDUAL, NEW_INDIVIDUAL, "A", NEW_INDIVIDUAL]
    # A: 2/3 correct, B: 0/1 -> (2/3 + 0) / 2 = 1/3 (plain accuracy would be 2/4)
    assert baks(preds, truths) == pytest.approx(1 / 3)
    # all unknown truths are new_individual -> one group, 2 of 3 predicted new -> 2/3
    assert baus(preds, truths) == pytest.approx(2 / 3)
    assert baks_baus_gmean(preds, truths) == pytest.approx(math.sqrt(1 / 3 * 2 / 3))


def test_baus_balances_over_hidden_unknown_individuals() -> None:
    # AnimalCLEF keeps unknown animals' hidden ids: U1 (3 samples), U2 (1 sample).
    truths = ["K", "U1", "U1", "U1", "U2"]
    preds = ["K", NEW_INDIVIDUAL, NEW_INDIVIDUAL, "K", "K"]
    # U1: 2/3 predicted new, U2: 0/1 -> (2/3 + 0) / 2 = 1/3
    assert baus(preds, truths, unknown_ids={"U1", "U2"}) == pytest.approx(1 / 3)
    assert baks(preds, truths, unknown_ids={"U1", "U2"}) == pytest.approx(1.0)


def test_gmean_per_group_and_nan_as_zero() -> None:
    truths = ["A", NEW_INDIVIDUAL, "B", "B"]
    preds = ["A", NEW_INDIVIDUAL, "B", "C"]
    groups = ["lynx", "lynx", "turtle", "turtle"]
    # lynx: sqrt(1 * 1) = 1; turtle has no unknown sample -> BAUS NaN -> 0 -> 0
    assert baks_baus_gmean(preds, truths, groups=groups) == pytest.approx(0.5)
    assert math.isnan(baus(["B"], ["B"]))
    assert math.isnan(baks([NEW_INDIVIDUAL], [NEW_INDIVIDUAL]))
