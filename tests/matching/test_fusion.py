"""Tests for calibrated fusion (WildFusion): shortlist, pair cache, local normalisation,
calibration of each matcher and the fused ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wildid.matching import fusion
from wildid.matching.base import (
    CentredMatcher,
    CosineMatcher,
    Matcher,
    PooledMatcher,
    PrecomputedMatcher,
    Shortlist,
    pool_per_owner,
)
from wildid.matching.calibration import CalibrationError
from wildid.matching.fusion import (
    CalibratedFusion,
    LocalMatcher,
    PairCache,
    normalise_counts,
    rank_shortlist,
    same_pairs,
    shortlist,
)
from wildid.matching.local import LocalConfig


def test_shortlist_keeps_the_top_finite_columns_best_first() -> None:
    scores = np.array(
        [[0.1, 0.9, 0.5, 0.9], [-np.inf, 0.3, -np.inf, -np.inf]],
        dtype=np.float32,
    )
    rows = shortlist(scores, 3)
    assert rows[0].tolist() == [1, 3, 2]  # tie at 0.9: the lower column first
    assert rows[1].tolist() == [1]  # pairs not compared (-inf) are never matched
    assert [r.tolist() for r in shortlist(scores, 0)] == [[], []]
    top = Shortlist.top(scores, 3)
    assert top.columns.tolist() == [[1, 3, 2], [1, -1, -1]]
    gathered = top.gather(scores)
    assert (
        gathered[0].tolist() == pytest.approx([0.9, 0.9, 0.5]) and np.isnan(gathered[1, 1:]).all()
    )
    dense = top.dense(gathered, 4)
    assert dense[0].tolist() == pytest.approx([-np.inf, 0.9, 0.5, 0.9])
    assert np.isneginf(dense[1, [0, 2, 3]]).all()


def test_cosine_and_precomputed_matchers_score_the_shortlisted_pairs() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    names = [f"i{k}" for k in range(5)]
    features = dict(zip(names, vectors, strict=True))
    rows, gallery = names[:2], names[2:]
    full = vectors[:2] @ vectors[2:].T
    listed = Shortlist(np.array([[2, 0], [1, -1]]))
    cos = CosineMatcher(features)(rows, gallery, listed)
    assert cos[0].tolist() == pytest.approx([full[0, 2], full[0, 0]], abs=1e-6)
    assert cos[1, 0] == pytest.approx(full[1, 1], abs=1e-6) and np.isnan(cos[1, 1])
    pre = PrecomputedMatcher(full, rows, gallery)(rows, gallery, listed)
    assert np.allclose(pre, cos, equal_nan=True, atol=1e-6)
    centred = CentredMatcher(CosineMatcher(features))(rows, gallery, listed)
    assert centred[0].tolist() == pytest.approx(cos[0] - np.median(cos[0]), abs=1e-6)
    assert centred[1, 0] == pytest.approx(0.0) and np.isnan(centred[1, 1])


def test_centring_lifts_a_standout_above_a_high_flat_crowd() -> None:
    """Query 0 (known) has one candidate far above the rest; query 1 (new) meets a crowd
    of similar animals at high cosines: raw, query 1's best is higher; centred, lower."""
    scores = np.array([[0.7, 0.3, 0.3, 0.3], [0.8, 0.78, 0.77, 0.76]], dtype=np.float32)
    names = ["g0", "g1", "g2", "g3"]
    listed = Shortlist(np.tile(np.arange(4), (2, 1)))
    raw = PrecomputedMatcher(scores, ["q0", "q1"], names)
    centred = CentredMatcher(raw)(["q0", "q1"], names, listed)
    assert scores[1].max() > scores[0].max() and centred[0].max() > centred[1].max()
    assert (np.argsort(-centred, axis=1) == np.argsort(-scores, axis=1)).all()


def test_pooling_adds_up_an_individuals_photos_on_the_shortlist() -> None:
    """Individual A's two photos each score 3; B's one photo 5: by its best photo B wins,
    pooled A does (6). Padding stays NaN, and a photo off the shortlist adds nothing."""
    scores = np.array([[3.0, 3.0, 5.0, 9.0], [1.0, 2.0, 4.0, 0.0]], dtype=np.float32)
    names = ["a1", "a2", "b1", "b2"]
    of = {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}
    listed = Shortlist(np.array([[0, 1, 2, -1], [2, 3, 1, -1]]))
    raw = PrecomputedMatcher(scores, ["q0", "q1"], names)
    pooled = PooledMatcher(raw, of, "sum")(["q0", "q1"], names, listed)
    assert pooled[0, :3].tolist() == [6.0, 6.0, 5.0] and np.isnan(pooled[0, 3])
    assert pooled[1, :3].tolist() == [4.0, 4.0, 2.0]  # q1: b1 + b2; a2 alone
    same = PooledMatcher(raw, of)(["q0", "q1"], names, listed)  # "max", the default
    assert np.array_equal(same, raw(["q0", "q1"], names, listed), equal_nan=True)
    with pytest.raises(ValueError, match="pool"):
        PooledMatcher(raw, of, "mean")


def test_pool_per_owner_sums_within_each_row_and_skips_unowned_cells() -> None:
    scores = np.array([[1.0, 2.0, 4.0, np.nan], [1.0, 2.0, 4.0, 8.0]], dtype=np.float32)
    owners = np.array([[0, 2, 0, 0], [2, 2, -1, 0]])
    pooled = pool_per_owner(scores, owners, "sum")
    assert pooled[0, :3].tolist() == [5.0, 2.0, 5.0] and np.isnan(pooled[0, 3])
    assert pooled[1].tolist() == [3.0, 3.0, 4.0, 8.0]  # the unowned 4 neither adds nor moves
    assert np.array_equal(pool_per_owner(scores, owners, "max"), scores, equal_nan=True)
    with pytest.raises(ValueError, match="pool"):
        pool_per_owner(scores, owners, "mean")


def test_local_scores_are_normalised_by_the_querys_chance_level() -> None:
    counts = np.array([[40.0, 10.0, 10.0, 10.0], [40.0, 0.0, 0.0, np.nan]])
    out = normalise_counts(counts, "query")
    # the same 40 inliers stand out more for a query whose other pairs find none
    assert out[0, 0] == pytest.approx(40 / 11) and out[1, 0] == pytest.approx(40 / 1)
    assert np.isnan(out[1, 3])
    assert normalise_counts(counts, "none")[0].tolist() == [40.0, 10.0, 10.0, 10.0]
    # within a query the order never changes
    assert (np.argsort(-out[0]) == np.argsort(-counts[0])).all()


def test_same_pairs_marks_the_rows_individual_on_its_shortlist() -> None:
    listed = Shortlist(np.array([[0, 1, 2], [2, -1, -1]]))
    same = same_pairs(listed, np.array(["a", "b", "a"]), ["a", "new_individual"])
    assert same.tolist() == [[True, False, True], [False, False, False]]


class _Table(Matcher):
    """A matcher reading its scores from a (rows x gallery) table, by name."""

    def __init__(self, name: str, table: dict[tuple[str, str], float]) -> None:
        self.name, self.table = name, table

    def __call__(self, rows, gallery, listed):
        out = np.full(listed.columns.shape, np.nan, np.float32)
        for r, row in enumerate(listed.columns):
            for j, g in enumerate(row):
                if g >= 0:
                    out[r, j] = self.table[(rows[r], gallery[g])]
        return out


def _constructed() -> tuple[list[str], list[str], np.ndarray, dict, dict]:
    """Gallery photos g0..g5 of individuals a, a, b, b, c, c; rows x0..x5 (truth a, b,
    c, a, b, c). The global matcher is right on even rows, local on odd rows; where a
    matcher is wrong its margin is small, where it is right large, so only their
    calibrated mean ranks every row right. Calibration rows c0..c5 behave alike."""
    gallery = [f"g{k}" for k in range(6)]
    ids = np.array(["a", "a", "b", "b", "c", "c"])
    photo = {"a": "g0", "b": "g2", "c": "g4"}
    wrong = {"a": "g2", "b": "g4", "c": "g0"}
    glob, loc = {}, {}
    for prefix in ("x", "c"):
        for k, truth in enumerate(["a", "b", "c", "a", "b", "c"]):
            row = f"{prefix}{k}"
            for g in gallery:
                glob[(row, g)], loc[(row, g)] = 0.2, 2.0
            if k % 2 == 0:  # global right by far, local wrong by a little
                glob[(row, photo[truth])] = 0.9
                loc[(row, photo[truth])], loc[(row, wrong[truth])] = 3.0, 4.0
            else:  # local right by far, global wrong by a little
                loc[(row, photo[truth])] = 40.0
                glob[(row, photo[truth])], glob[(row, wrong[truth])] = 0.5, 0.55
    return gallery, ["a", "b", "c", "a", "b", "c"], ids, glob, loc


def test_calibrated_fusion_ranks_right_where_either_matcher_alone_fails() -> None:
    gallery, truths, ids, glob, loc = _constructed()
    listed = Shortlist(np.tile(np.arange(6), (6, 1)))
    queries, cal_rows = [f"x{k}" for k in range(6)], [f"c{k}" for k in range(6)]
    model = CalibratedFusion([_Table("global", glob), _Table("local", loc)])
    scored = model.score(cal_rows, gallery, listed)
    fitted = model.fit(scored, same_pairs(listed, ids, truths), "test")
    for name, calibration in fitted.calibrations.items():
        # monotone, and held-out same pairs map above different pairs on average
        grid = np.linspace(-1, 50, 200)
        assert (np.diff(calibration(grid)) > 0).all(), name
        raw = scored.raw[name]
        same = same_pairs(listed, ids, truths)
        assert calibration(raw[same]).mean() > calibration(raw[~same]).mean()
    fused = fitted(queries, gallery, listed)

    def top1(values: np.ndarray) -> float:
        ranking = rank_shortlist(listed, values, ids)
        return float(np.mean([ranking.labels[r][0] == t for r, t in enumerate(truths)]))

    assert top1(fused.raw["global"]) == 0.5 and top1(fused.raw["local"]) == 0.5
    assert top1(fused.fused) == 1.0
    assert np.allclose(
        fused.fused, (fused.probabilities["global"] + fused.probabilities["local"]) / 2
    )
    assert fused.dense(6).shape == (6, 6)


def test_fusion_needs_fitted_calibrations_and_distinct_names() -> None:
    _, _, _, glob, _ = _constructed()
    listed = Shortlist(np.zeros((1, 1), dtype=np.int64))
    model = CalibratedFusion([_Table("global", glob)])
    with pytest.raises(CalibrationError, match="not calibrated"):
        model(["x0"], ["g0"], listed)
    with pytest.raises(ValueError, match="distinct"):
        CalibratedFusion([_Table("global", glob), _Table("global", glob)])
    # no same pair: an uncalibrated, rank-preserving stand-in (or an error when asked)
    scored = model.score(["x0"], ["g0"], listed)
    nothing = np.zeros((1, 1), dtype=bool)
    stand_in = model.fit(scored, nothing, "test").calibrations["global"]
    assert stand_in.source.startswith("uncalibrated")
    with pytest.raises(CalibrationError):
        model.fit(scored, nothing, "test", fallback=False)


def test_local_matcher_reads_the_pair_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_match(queries, gallery, candidates, config, workers, progress):
        return [
            np.array([10 * q + gallery[g] for g in c])
            for q, c in zip(queries, candidates, strict=True)
        ]

    monkeypatch.setattr(fusion, "match_pairs", fake_match)
    sift = {"q0": 1, "g0": 0, "g1": 1, "g2": 2}
    cache = PairCache(sift, LocalConfig(), 1, False)  # type: ignore[arg-type]
    listed = Shortlist(np.array([[2, 0, -1]]))
    raw = LocalMatcher(cache, "none")(["q0"], ["g0", "g1", "g2"], listed)
    assert raw[0, :2].tolist() == [12, 10] and np.isnan(raw[0, 2])
    normed = LocalMatcher(cache, "query")(["q0"], ["g0", "g1", "g2"], listed)
    assert normed[0, 0] == pytest.approx(12 / 12)  # median of (12, 10) is 11
    with pytest.raises(ValueError, match="normalise"):
        LocalMatcher(cache, "other")


def test_pair_cache_matches_each_pair_once_and_keeps_counts_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[list[int]]] = []

    def fake_match(queries, gallery, candidates, config, workers, progress):
        calls.append([list(c) for c in candidates])
        # inliers: 10 x query feature + gallery feature, so every pair has its own count
        return [
            np.array([10 * q + gallery[g] for g in c])
            for q, c in zip(queries, candidates, strict=True)
        ]

    monkeypatch.setattr(fusion, "match_pairs", fake_match)
    sift = {"q0": 1, "q1": 2, "g0": 0, "g1": 1, "g2": 2}
    file = tmp_path / "pairs.csv"
    cache = PairCache(sift, LocalConfig(), 1, False, file)  # type: ignore[arg-type]
    rows, gallery = pd.Series(["q0", "q1"]), pd.Series(["g0", "g1", "g2"])
    out = cache.matrix(rows, gallery, [np.array([0, 2]), np.array([1])])
    assert out.tolist() == [[10, -1, 12], [-1, 21, -1]]  # -1: not on the shortlist
    assert calls == [[[0, 2], [1]]]
    # an overlapping shortlist matches only the new pair
    assert cache.matrix(rows, gallery, [np.array([2, 1]), np.array([])])[0].tolist() == [
        -1,
        11,
        12,
    ]
    assert calls[-1] == [[1]]
    # a fresh cache on the same file matches nothing
    again = PairCache(sift, LocalConfig(), 1, False, file)  # type: ignore[arg-type]
    n = len(calls)
    assert again.matrix(rows, gallery, [np.array([0, 1, 2]), np.array([1])]).tolist() == [
        [10, 11, 12],
        [-1, 21, -1],
    ]
    assert len(calls) == n


def test_pair_cache_keys_one_vs_many_scores_by_the_candidate_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An LNBNN score depends on the other candidates: the same pair under another list is
    matched again (the whole row), under the same list read from the file."""
    calls: list[list[list[int]]] = []

    def fake_match(queries, gallery, candidates, config, workers, progress):
        calls.append([list(c) for c in candidates])
        # a score that depends on the list, as LNBNN's does
        return [np.array([0.5 * gallery[g] + len(c) for g in c]) for c in candidates]

    monkeypatch.setattr(fusion, "match_pairs", fake_match)
    sift = {"q0": 1, "g0": 0, "g1": 1, "g2": 2}
    file = tmp_path / "pairs.csv"
    config = LocalConfig(score="lnbnn")
    cache = PairCache(sift, config, 1, False, file)  # type: ignore[arg-type]
    rows, gallery = pd.Series(["q0"]), pd.Series(["g0", "g1", "g2"])
    assert cache.matrix(rows, gallery, [np.array([0, 2])]).tolist() == [[2.0, -1, 3.0]]
    # another list holding g2: the row is matched again, all of it
    assert cache.matrix(rows, gallery, [np.array([2, 1, 0])]).tolist() == [[3.0, 3.5, 4.0]]
    assert calls[-1] == [[2, 1, 0]]
    n = len(calls)
    again = PairCache(sift, config, 1, False, file)  # type: ignore[arg-type]
    assert again.matrix(rows, gallery, [np.array([2, 0])]).tolist() == [[2.0, -1, 3.0]]
    assert len(calls) == n  # the same list, in another order: read from the file
    # an older file with inlier counts and no context column still reads
    pd.DataFrame({"query": ["q0"], "gallery": ["g1"], "inliers": [7]}).to_csv(file, index=False)
    old = PairCache(sift, LocalConfig(), 1, False, file)  # type: ignore[arg-type]
    assert old.matrix(rows, gallery, [np.array([1])]).tolist() == [[-1, 7.0, -1]]
    assert len(calls) == n


def test_weights_turn_down_a_matcher_that_only_adds_noise() -> None:
    """An imperfect global matcher and a second one that is pure noise, or an independent
    signal: chosen on the calibration rows alone, the noise gets a small weight (at most
    a quarter), the signal a real one."""
    rng = np.random.default_rng(0)
    ids = np.repeat([f"i{k}" for k in range(40)], 2)  # gallery: 40 individuals x 2 photos
    truths = [f"i{k % 40}" for k in range(120)]
    same = ids[None, :] == np.array(truths)[:, None]
    global_ = np.where(same, rng.normal(0.55, 0.1, same.shape), rng.normal(0.4, 0.1, same.shape))
    noise = rng.random(same.shape)
    signal = np.where(same, rng.normal(0.6, 0.15, same.shape), rng.normal(0.4, 0.15, same.shape))
    rows, gallery = [f"c{k}" for k in range(120)], [f"g{k}" for k in range(80)]
    listed = Shortlist.top(global_, 30)
    labels = same_pairs(listed, ids, truths)
    chosen = {}
    for name, other in (("noise", noise), ("signal", signal)):
        model = CalibratedFusion(
            [
                PrecomputedMatcher(global_.astype(np.float32), rows, gallery, "global"),
                PrecomputedMatcher(other.astype(np.float32), rows, gallery, name),
            ]
        )
        scored = model.score(rows, gallery, listed)
        chosen[name] = fusion.choose_weights(model, scored, labels, ids, truths)
    assert chosen["noise"][0] == 1.0 and chosen["noise"][1] <= 0.25
    assert chosen["signal"][1] >= 0.5
