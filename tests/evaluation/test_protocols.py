"""Tests for the closed- and open-set protocols: splits, masks, ranking and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.evaluation.protocols import (
    Protocol,
    calibration,
    calibration_images,
    calibration_scores,
    closed_scores,
    flank_classes,
    import_protocols,
    open_scores,
    protocol_scores,
    query_scores,
    rank,
    side_mask,
    training_exclusion,
    trains_on_calibration,
    tune,
)


def _catalogue(root: Path, individuals: int = 10, sightings: int = 4) -> Path:
    shade = 0
    for ind in range(individuals):
        for s in range(sightings if ind % 3 else 1):  # every third has a single sighting
            for side in ("left", "right"):
                shade += 1
                path = root / f"ind{ind}" / f"{100 + s}_{side}photo.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 6), (shade % 256, shade * 7 % 256, 0)).save(path)
    return root


def test_import_protocols_splits_by_sighting(tmp_path: Path) -> None:
    protocols = import_protocols(_catalogue(tmp_path / "src"), tmp_path / "out", r"^(\d+)_")
    closed, open_ = protocols["closed"], protocols["open"]
    assert NEW_INDIVIDUAL not in closed.truths
    assert NEW_INDIVIDUAL in open_.truths
    for p in protocols.values():
        units = lambda t: set(zip(t["individual_id"], t["group"], strict=True))  # noqa: E731
        assert not units(p.gallery) & units(p.queries)
        assert set(p.gallery["side"]) == {"left", "right"}
        assert all(Path(x).is_file() for x in p.queries["path"])
    # single-sighting individuals are never closed-set queries
    assert not set(closed.queries["individual_id"]) & {"ind0", "ind3", "ind6", "ind9"}


def test_side_mask_allows_same_or_unknown_side() -> None:
    mask = side_mask(pd.Series(["left", None]), pd.Series(["left", "right", None]))
    assert mask.tolist() == [[True, False, True], [True, True, True]]


def test_rank_keeps_best_photo_per_individual_and_skips_uncompared() -> None:
    scores = np.array([[0.2, 0.9, 0.5, -np.inf]])
    ranking = rank(scores, ["a", "b", "a", "c"])
    assert ranking.labels == [["b", "a"]]
    assert ranking.scores[0, :2].tolist() == pytest.approx([0.9, 0.5])
    assert np.isneginf(ranking.scores[0, 2:]).all()  # padding, not "c"


def test_closed_and_open_scores() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.35]])
    ranking = rank(scores, ["a", "b"])
    truths = ["a", "a", NEW_INDIVIDUAL]
    closed = closed_scores(ranking, truths)
    assert closed["top1"] == 1 / 3
    # short lists are padded with new_individual (third place here), as in submissions
    assert np.isclose(closed["map5"], (1 + 0.5 + 1 / 3) / 3)
    opened = open_scores(ranking, truths, threshold=0.5)
    assert opened["baus"] == 1.0  # the weak third query is called new
    assert opened["baks"] == 0.5  # of a's two queries, one is right at top-1


def test_calibration_masks_own_sighting_and_marks_single_sighting_new() -> None:
    gallery = pd.DataFrame(
        {"individual_id": ["a", "a", "a", "b", "b"], "group": ["1", "1", "2", "7", "7"]}
    )
    cal = calibration(gallery, n=5)
    assert cal.truths == ["a", "a", "a", NEW_INDIVIDUAL, NEW_INDIVIDUAL]
    assert not cal.mask[0, 1] and cal.mask[0, 2] and not cal.mask[3, 4]


def test_calibration_images_are_whole_sightings_of_the_pseudo_queries() -> None:
    gallery = pd.DataFrame(
        {
            "image": ["p0", "p1", "p2", "p3", "p4", "p5"],
            "individual_id": ["a", "a", "a", "b", "b", "c"],
            "group": ["1", "1", "2", "1", "3", "4"],
        }
    )
    cal = calibration(gallery, n=2, seed=1)
    assert cal.rows.tolist() == [0, 4]  # pseudo-queries p0 (a, sighting 1) and p4 (b, 3)
    # p1 is p0's near duplicate; p3 is another animal of the same encounter group
    assert calibration_images(gallery, cal) == ["p0", "p1", "p4"]


def test_calibration_tops_up_new_pseudo_queries_with_individuals_held_out_whole() -> None:
    """Without sighting ids (a photo per group) every individual with two photos looks
    known; `min_new` holds further individuals out whole so that enough play new, and a
    model tuned on the calibration must then not train on any of their photos."""
    ids = [i for i in "abcdefgh" for _ in range(3)]
    gallery = pd.DataFrame(
        {
            "image": [f"p{k}" for k in range(len(ids))],
            "individual_id": ids,
            "group": [str(k) for k in range(len(ids))],  # GROUP= empty: each photo alone
        }
    )
    plain = calibration(gallery, n=4, seed=0)
    assert NEW_INDIVIDUAL not in plain.truths  # nothing would play new
    cal = calibration(gallery, n=4, seed=0, min_new=3, per_new=2)
    assert cal.rows[: len(plain.rows)].tolist() == plain.rows.tolist()  # same sample first
    new_rows = [r for r, t in zip(cal.rows, cal.truths, strict=True) if t == NEW_INDIVIDUAL]
    held = {ids[r] for r in new_rows}
    assert len(held) == 3 and len(new_rows) == 6
    assert not held & {ids[r] for r in plain.rows}  # none of the known rows' individuals
    for k, r in enumerate(cal.rows):
        if cal.truths[k] == NEW_INDIVIDUAL:  # its whole individual is hidden from it
            assert not cal.mask[k][np.array(ids) == ids[r]].any()
        else:  # only its own photo (its sighting)
            assert (~cal.mask[k]).sum() == 1
    excluded = set(calibration_images(gallery, cal))
    assert {f"p{k}" for k, i in enumerate(ids) if i in held} <= excluded
    # enough single-sighting individuals already: nothing is held out on top
    assert calibration(gallery, n=4, seed=0, min_new=0).rows.tolist() == plain.rows.tolist()


def test_tune_finds_a_threshold_separating_new_from_known() -> None:
    gallery = pd.DataFrame(
        {"individual_id": ["a", "a", "b", "b", "c"], "group": ["1", "2", "3", "4", "5"]}
    )
    cal = calibration(gallery, n=5)
    # known rows match their other sighting at 0.9, c (single sighting) at most 0.3
    scores = np.full((5, 5), 0.1)
    for i, j in ((0, 1), (1, 0), (2, 3), (3, 2)):
        scores[i, j] = 0.9
    scores[4, 0] = 0.3
    threshold = tune(scores, gallery["individual_id"].to_numpy(), cal)
    assert 0.3 < threshold <= 0.9


def test_expected_new_share_follows_the_protocol_design() -> None:
    from wildid.evaluation.protocols import expected_new_share

    assert expected_new_share(0.2, 0.2) == pytest.approx(0.2 / 0.36)
    assert expected_new_share(0.0, 0.2) == 0.0
    assert expected_new_share(1.0, 0.2) == 1.0


def test_share_weights_give_new_queries_the_asked_share() -> None:
    from wildid.evaluation.protocols import share_weights

    truths = ["a", "b", "c", "new_individual"]
    weights = share_weights(truths, 0.5)
    assert weights[3] / weights.sum() == pytest.approx(0.5)
    assert weights[:3] == pytest.approx([weights[0]] * 3)
    assert share_weights(["a", "b"], 0.5) == pytest.approx([1.0, 1.0])  # no new: unweighted


def test_weighted_tuning_calls_more_queries_new() -> None:
    """Two known queries with strong matches and one new query matching weakly, plus one
    known query matching as weakly as the new one: unweighted, the threshold keeps the weak
    known query (2 of 3 known); with new queries weighted to 0.9, it calls both weak new."""
    from wildid.evaluation.protocols import Calibration, tune

    gallery_ids = np.array(["a", "b", "c", "d"])
    scores = np.array(
        [[0.9, 0.1, 0.1, 0.1], [0.1, 0.9, 0.1, 0.1], [0.1, 0.1, 0.5, 0.1], [0.1, 0.1, 0.1, 0.5]],
        dtype=np.float32,
    )
    truths = ["a", "b", "c", "new_individual"]
    cal = Calibration(np.arange(4), truths, np.ones_like(scores, dtype=bool))
    low = tune(scores, gallery_ids, cal)
    high = tune(scores, gallery_ids, cal, new_share=0.9)
    assert low <= 0.5 < high  # new_individual goes first when the best score is below


def _protocol(name: str = "closed") -> Protocol:
    """Gallery g0..g3 (a left, a right, b left, b unknown flank); queries q0 (a left, a
    query) and q1 (right)."""
    gallery = pd.DataFrame(
        {
            "image": ["g0", "g1", "g2", "g3"],
            "individual_id": ["a", "a", "b", "b"],
            "group": ["1", "2", "3", "4"],
            "side": ["left", "right", "left", None],
        }
    )
    queries = pd.DataFrame(
        {
            "image": ["q0", "q1"],
            "individual_id": ["a", "c"],
            "group": ["5", "6"],
            "side": ["left", "right"],
            "truth": ["a", NEW_INDIVIDUAL if name == "open" else "a"],
        }
    )
    return Protocol(name, Path("."), gallery, queries)


def _features() -> dict[str, np.ndarray]:
    unit = {"x": [1.0, 0.0], "y": [0.0, 1.0], "xy": [0.6, 0.8]}
    kinds = {"g0": "x", "g1": "x", "g2": "y", "g3": "xy", "q0": "x", "q1": "xy"}
    return {image: np.array(unit[k], dtype=np.float32) for image, k in kinds.items()}


def test_query_scores_are_cosines_within_a_flank() -> None:
    scores = query_scores(_features(), _protocol())
    assert scores.dtype == np.float32
    # q0 (left): g1 is a right flank, never compared; g3's flank is unknown, compared
    assert scores[0].tolist() == pytest.approx([1.0, -np.inf, 0.0, 0.6])
    assert scores[1].tolist() == pytest.approx([-np.inf, 0.6, -np.inf, 1.0])


def test_calibration_scores_mask_flanks_and_the_own_sighting() -> None:
    protocol = _protocol()
    cal = calibration(protocol.gallery, n=4)
    scores = calibration_scores(_features(), protocol, cal)
    assert scores.shape == (4, 4)
    assert np.isneginf(np.diag(scores)).all()  # each row's own sighting (itself)
    assert np.isneginf(scores[0, 1]) and scores[0, 2] == pytest.approx(0.0)  # flanks
    assert scores[0, 3] == pytest.approx(0.6) and scores[3, 1] == pytest.approx(0.6)


def test_only_the_open_model_leaves_its_calibration_sightings_out() -> None:
    open_, closed = _protocol("open"), _protocol("closed")
    gallery = pd.concat([open_.gallery, open_.gallery.iloc[:1].assign(image="g0b")])
    open_ = Protocol("open", Path("."), gallery.reset_index(drop=True), open_.queries)
    cal = calibration(open_.gallery, n=1, seed=1)
    assert open_.gallery["image"].iloc[cal.rows].tolist() == ["g0b"]
    assert trains_on_calibration(closed) and not trains_on_calibration(open_)
    assert training_exclusion(closed, calibration(closed.gallery, n=2)) == []
    # the pseudo-query g0b and its near duplicate g0 (same individual and sighting)
    assert training_exclusion(open_, cal) == ["g0", "g0b"]


def test_protocol_scores_tune_a_threshold_for_the_open_protocol_only() -> None:
    ids = np.array(["a", "a", "b", "b"])
    query = np.array([[0.9, 0.1, 0.2, 0.0], [0.3, 0.2, 0.1, 0.0]], dtype=np.float32)
    closed = protocol_scores(_protocol("closed"), rank(query, ids), query, ids, None, None)
    assert set(closed) == {"top1", "map5"} and closed["top1"] == 1.0
    # calibration: a's second photo matches its first at 0.8; c-like rows only at 0.3
    gallery = pd.DataFrame({"individual_id": ids, "group": ["1", "2", "3", "3"]})
    cal = calibration(gallery, n=4)
    cal_scores = np.array(
        [[0, 0.8, 0.2, 0.2], [0.8, 0, 0.2, 0.2], [0.3, 0.3, 0, 0], [0.3, 0.3, 0, 0]],
        dtype=np.float32,
    )
    opened = protocol_scores(_protocol("open"), rank(query, ids), cal_scores, ids, cal, None)
    assert set(opened) == {"map5", "baks", "baus", "gmean", "threshold"}
    assert 0.3 < opened["threshold"] <= 0.8
    assert opened["threshold"] == tune(cal_scores, ids, cal)
    assert opened["baks"] == 1.0 and opened["baus"] == 1.0  # q1 (0.3) is called new


def test_flank_classes_split_each_individual_by_flank() -> None:
    gallery = pd.DataFrame({"image": ["a", "b", "c", "d"], "side": ["left", "right", None, "left"]})
    split = pd.DataFrame(
        {
            "image": ["a", "b", "c", "d"],
            "individual_id": ["7", "7", "7", "8"],
            "role": "train",
            "val_truth": ["7", "7", "7", "new_individual"],
        }
    )
    out = flank_classes(split, gallery)
    assert out["individual_id"].tolist() == ["7_left", "7_right", "7", "8_left"]
    assert out["val_truth"].tolist() == ["7_left", "7_right", "7", "new_individual"]
    assert split["individual_id"].tolist() == ["7", "7", "7", "8"]  # input left alone
    no_val = flank_classes(split.drop(columns="val_truth"), gallery)
    assert "val_truth" not in no_val and no_val["individual_id"].iloc[1] == "7_right"
