"""Open set: new_individual insertion at every rank, vectorised MAP@5, threshold rules."""

from __future__ import annotations

import numpy as np
import pytest

from wildid.config import RetrievalConfig
from wildid.data.competition import NEW_INDIVIDUAL as NEW
from wildid.evaluation.metrics import map_at_k
from wildid.infer.openset import (
    choose_threshold,
    fraction_threshold,
    insert_new,
    insertion_rank,
    map5_curve,
    predict,
    predicted_species,
    tune_threshold,
)
from wildid.infer.retrieval import Ranking

LABELS = ["a", "b", "c", "d", "e", "f"]
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]


@pytest.mark.parametrize(
    ("threshold", "rank"),
    [(0.95, 0), (0.85, 1), (0.75, 2), (0.65, 3), (0.55, 4), (0.45, None), (None, None)],
)
def test_new_goes_at_every_rank(threshold, rank):
    ranking = Ranking.from_lists([LABELS], [SCORES])
    row = predict(ranking, threshold)[0]
    assert row == insert_new(LABELS, SCORES, threshold)
    if rank is None:
        assert row == LABELS[:5]
    else:
        assert row.index(NEW) == rank and [x for x in row if x != NEW] == LABELS[:4]


def test_threshold_equal_to_a_score_keeps_that_candidate_first():
    ranking = Ranking.from_lists([LABELS], [SCORES])
    assert predict(ranking, 0.8)[0] == ["a", "b", NEW, "c", "d"]


def test_short_rows_are_padded_with_new_then_fillers():
    ranking = Ranking.from_lists([["a"], ["a", "b"]], [[0.9], [0.9, 0.1]])
    rows = predict(ranking, 0.5, fillers=["z", "a", "y", "x"])
    assert rows[0] == ["a", NEW, "z", "y", "x"]
    assert rows[1] == ["a", NEW, "b", "z", "y"]
    assert predict(ranking, None, fillers=["z"])[0] == ["a", NEW, "z"]


def test_per_query_thresholds():
    ranking = Ranking.from_lists([LABELS, LABELS], [SCORES, SCORES])
    rows = predict(ranking, np.array([0.95, 0.75]))
    assert rows[0][0] == NEW and rows[1][2] == NEW
    assert insertion_rank(ranking.scores, np.array([0.95, 0.75])).tolist() == [0, 2]


def _random_case(seed: int, queries: int = 300):
    rng = np.random.default_rng(seed)
    names = [f"id{i}" for i in range(30)]
    labels, scores, truths = [], [], []
    for _ in range(queries):
        width = int(rng.integers(1, 9))
        labels.append(list(rng.choice(names, size=width, replace=False)))
        scores.append(sorted(np.round(rng.random(width), 1).tolist(), reverse=True))
        pick = rng.random()
        truths.append(
            NEW
            if pick < 0.3
            else labels[-1][0]
            if pick < 0.6
            else str(rng.choice(names + ["stranger"]))
        )
    return Ranking.from_lists(labels, scores), labels, scores, truths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_predict_and_map_match_the_reference(seed):
    ranking, labels, scores, truths = _random_case(seed)
    grid = [None, -0.1, 0.0, 0.3, 0.5, 0.55, 0.7, 1.0, 1.1]
    curve = map5_curve(ranking, truths, grid)
    for threshold, value in zip(grid, curve, strict=True):
        reference = [
            insert_new(lab, sco, threshold) for lab, sco in zip(labels, scores, strict=True)
        ]
        assert predict(ranking, threshold) == reference
        assert value == pytest.approx(map_at_k(reference, truths))


def test_tune_picks_best_and_breaks_ties_low():
    ranking = Ranking.from_lists([["a", "b"], ["a", "b"]], [[0.9, 0.3], [0.4, 0.2]])
    best, curve = tune_threshold(ranking, ["a", NEW], [0.1, 0.5, 0.6, 0.95])
    assert best == 0.5  # 0.5 and 0.6 both give MAP 1.0
    assert [m for _, m in curve] == pytest.approx([0.5 * (1 + 1 / 3), 1.0, 1.0, 0.75])


def test_fraction_rule_marks_the_weakest_queries_new():
    top = np.linspace(0.0, 1.0, 101)
    ranking = Ranking.from_lists([["a"]] * 101, [[t] for t in top])
    threshold = fraction_threshold(ranking, 0.2)
    rows = predict(ranking, threshold)
    assert sum(row[0] == NEW for row in rows) == 20


def test_choose_threshold_modes_and_per_species():
    labels = [["w1", "d1"]] * 40 + [["d1", "w1"]] * 40
    scores = [[0.9, 0.1]] * 20 + [[0.6, 0.1]] * 20 + [[0.5, 0.1]] * 20 + [[0.3, 0.1]] * 20
    # whales: known at 0.9, new at 0.6; dolphins: known at 0.5, new at 0.3
    truths = ["w1"] * 20 + [NEW] * 20 + ["d1"] * 20 + [NEW] * 20
    ranking = Ranking.from_lists(labels, scores)
    species_of = {"w1": "whale", "d1": "dolphin"}
    grid = [round(0.05 * i, 2) for i in range(21)]
    tuned = choose_threshold(RetrievalConfig(threshold_grid=grid), ranking, truths, ranking)
    assert tuned.source == "tuned" and not tuned.per_species
    per = choose_threshold(
        RetrievalConfig(threshold_grid=grid, per_species=True), ranking, truths, ranking, species_of
    )
    species = predicted_species(ranking, species_of)
    assert set(per.per_species) == {"whale", "dolphin"}
    assert 0.6 < per.per_species["whale"] <= 0.9 and 0.3 < per.per_species["dolphin"] <= 0.5
    per_curve = map5_curve(ranking, truths, [per.for_queries(species)])[0]
    assert per_curve == pytest.approx(1.0)
    assert map5_curve(ranking, truths, [tuned.value])[0] < 0.99
    fixed = choose_threshold(RetrievalConfig(threshold=0.42), ranking, truths, ranking)
    assert fixed.value == 0.42 and fixed.source == "fixed" and fixed.curve
    frac = choose_threshold(RetrievalConfig(new_fraction=0.25), ranking, [], ranking)
    assert frac.source == "fraction" and not frac.curve
    assert choose_threshold(RetrievalConfig(), ranking, [], ranking).value is None


def test_species_without_held_out_queries_keeps_the_global_threshold():
    labels = [["w1"]] * 30 + [["d1"]] * 30
    scores = [[0.9]] * 15 + [[0.6]] * 15 + [[0.5]] * 30
    truths = ["w1"] * 15 + [NEW] * 15 + ["d1"] * 30  # no dolphin was held out
    ranking = Ranking.from_lists(labels, scores)
    config = RetrievalConfig(per_species=True, species_min_queries=5)
    chosen = choose_threshold(config, ranking, truths, ranking, {"w1": "whale", "d1": "dolphin"})
    assert set(chosen.per_species) == {"whale"}


# --- operating points -------------------------------------------------------------------------


def _open_case(seed: int, n_known: int = 60, n_new: int = 60):
    """Known queries whose best candidate is right with a high-ish probability, new ones
    with lower best probabilities; overlapping, so no threshold is perfect."""
    rng = np.random.default_rng(seed)
    labels, scores, truths = [], [], []
    for k in range(n_known):
        truth = f"k{k % 20}"
        right = rng.random() < 0.7
        top = rng.uniform(0.4, 1.0) if right else rng.uniform(0.2, 0.7)
        labels.append([truth if right else "x", "y", truth if not right else "z"])
        scores.append([top, top - 0.1, top - 0.2])
        truths.append(truth)
    for _k in range(n_new):
        top = rng.uniform(0.0, 0.6)
        labels.append(["x", "y", "z"])
        scores.append([top, top - 0.1, top - 0.2])
        truths.append(NEW)
    return Ranking.from_lists(labels, scores), truths


def test_balanced_curve_matches_the_metrics_on_predict_top1() -> None:
    from wildid.evaluation.metrics import baks, baus
    from wildid.infer.openset import balanced_curve

    ranking, truths = _open_case(0)
    grid = [0.0, 0.3, 0.5, 0.7, 1.1]
    known, unknown = balanced_curve(ranking, truths, grid)
    for t, k, u in zip(grid, known, unknown, strict=True):
        top1 = [row[0] for row in predict(ranking, t)]
        assert k == pytest.approx(baks(top1, truths)) and u == pytest.approx(baus(top1, truths))
    assert unknown[0] == 0.0 and unknown[-1] == 1.0 and known[-1] == 0.0


def test_operating_points_are_chosen_on_calibration_queries_only() -> None:
    """The points come from the calibration ranking and truths alone: the queries they are
    applied to (here a fresh draw) cannot move them, yet they do well there."""
    from wildid.evaluation.metrics import baks, baus
    from wildid.infer.openset import choose_operating_points

    cal_ranking, cal_truths = _open_case(1)
    points = choose_operating_points(cal_ranking, cal_truths)
    again = choose_operating_points(cal_ranking, cal_truths)
    assert (points.map5, points.gmean) == (again.map5, again.gmean)
    assert 0.0 < points.gmean < 1.0  # neither "all new" nor "none new"
    q_ranking, q_truths = _open_case(2)
    top1 = [row[0] for row in predict(q_ranking, points.gmean)]
    gmean = np.sqrt(baks(top1, q_truths) * baus(top1, q_truths))
    for extreme in (-1.0, 2.0):  # calling nothing / everything new
        top1_x = [row[0] for row in predict(q_ranking, extreme)]
        assert gmean > np.sqrt(baks(top1_x, q_truths) * baus(top1_x, q_truths))
    best = points.at("gmean")
    assert best["gmean"] == max(row["gmean"] for row in points.curve)
    # weighting calibration queries towards new ones moves the MAP@5 point, not the gmean
    is_new = np.array([t == NEW for t in cal_truths])
    heavy = choose_operating_points(cal_ranking, cal_truths, np.where(is_new, 5.0, 1.0))
    assert heavy.gmean == points.gmean and heavy.map5 >= points.map5
    with pytest.raises(ValueError, match="operating point"):
        points.threshold("other")


def test_without_new_calibration_queries_the_gmean_point_falls_back() -> None:
    from wildid.infer.openset import choose_operating_points

    ranking = Ranking.from_lists([["a", "b"], ["b", "a"]], [[0.9, 0.1], [0.8, 0.2]])
    points = choose_operating_points(ranking, ["a", "b"])
    assert points.gmean == points.map5
