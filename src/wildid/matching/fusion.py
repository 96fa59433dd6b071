"""Calibrated fusion of matchers (WildFusion): every matcher's score becomes P(same
individual), and the probabilities are averaged.

Stages, each a callable on the previous one's output:

1. shortlist: per query, the top-n gallery photos of a fast priority matcher (the global
   embedding's cosine), `Shortlist.top`; local matching is too slow for every pair.
2. score: every matcher scores the shortlisted pairs on its own scale
   (`CalibratedFusion.score`): the cosine (`wildid.matching.base.CosineMatcher`) and
   keypoints on the animal (`LocalMatcher`): HotSpotter's one-vs-many LNBNN weights of
   the RANSAC-kept matches over the query's whole shortlist, or each pair's inlier count
   (`wildid.matching.local.LocalConfig.score`).
3. calibrate: each matcher's isotonic calibration (`wildid.matching.calibration`), fitted
   on held-out gallery pairs (`CalibratedFusion.fit`: leave-one-sighting-out gallery
   pseudo-queries against the rest of the gallery, never a query), maps its scores to
   P(same); the fused score is their mean (`CalibratedFusion.calibrate`).
4. rank and decide: the fused probabilities rank the gallery (`rank_shortlist`) and
   decide `new_individual` (`wildid.infer.openset.choose_operating_points`).

Pairs off the shortlist are not candidates. The local scores are kept by (query image,
gallery image, and for LNBNN the candidate list) in a `PairCache`, so overlapping
shortlists and re-runs match each pair once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

from wildid.cache import fingerprint
from wildid.data.competition import NEW_INDIVIDUAL
from wildid.infer.openset import map5_curve
from wildid.infer.retrieval import Ranking, best_per_individual
from wildid.io import write_csv
from wildid.matching.base import PAD, Matcher, Shortlist
from wildid.matching.calibration import (
    CalibrationError,
    IsotonicCalibration,
    fit_isotonic,
    uncalibrated,
)
from wildid.matching.local import Features, LocalConfig, match_pairs

NORMALISE = ("query", "none")


def shortlist(scores: np.ndarray, n: int) -> list[np.ndarray]:
    """Top-n allowed (finite) gallery columns of each row, best first (ties: lower column)."""
    return Shortlist.top(scores, n).lists()


class PairCache:
    """Local scores by (query image, gallery image): the SIFT and fusion shortlists
    overlap, and matching is the slow part.

    `sift` maps each image to its extracted features; with `file`, the scores are read from
    that CSV (query, gallery, context, score) and written back after each batch of new
    matches, so name it by the matcher settings (a re-run with other fusion or protocol
    settings then skips the matching). A one-vs-many score (`LocalConfig.score="lnbnn"`)
    depends on the query's whole candidate list, so it is kept under that list's
    fingerprint (`context`); a pair's inlier count (context "") does not.
    """

    def __init__(
        self,
        sift: dict[str, Features],
        config: LocalConfig,
        workers: int,
        progress: bool,
        file: Path | None = None,
    ) -> None:
        self.sift, self.config, self.workers, self.progress = sift, config, workers, progress
        self.counts: dict[tuple[str, str, str], float] = {}
        self.file = file
        if file is not None and file.is_file():
            table = pd.read_csv(
                file, dtype={"query": str, "gallery": str, "context": str}, keep_default_na=False
            )
            values = table["score" if "score" in table else "inliers"].astype(float)
            context = table["context"] if "context" in table else [""] * len(table)
            self.counts = dict(
                zip(
                    zip(table["query"], table["gallery"], context, strict=True),
                    values,
                    strict=True,
                )
            )

    def save(self) -> None:
        """Keep the scores on disk (keyed by the matcher settings in the file name): a re-run
        with other fusion or protocol settings then skips the slow matching."""
        if self.file is not None:
            keys = list(self.counts)
            write_csv(
                pd.DataFrame(
                    {
                        "query": [k[0] for k in keys],
                        "gallery": [k[1] for k in keys],
                        "context": [k[2] for k in keys],
                        "score": list(self.counts.values()),
                    }
                ),
                self.file,
            )

    def _context(self, gallery: np.ndarray, candidates: np.ndarray) -> str:
        if self.config.score != "lnbnn":
            return ""
        return fingerprint(sorted(str(g) for g in gallery[np.asarray(candidates, np.int64)]))[:16]

    def matrix(
        self, rows: pd.Series, gallery: pd.Series, candidates: list[np.ndarray]
    ) -> np.ndarray:
        """(rows x gallery) local scores, -1 where not matched; `candidates[r]` are the
        gallery columns row r is matched against (pairs not yet cached are matched now)."""
        rows, gallery = rows.to_numpy(), gallery.to_numpy()
        contexts = [self._context(gallery, cand) for cand in candidates]
        todo = [
            (r, [g for g in cand if (rows[r], gallery[g], contexts[r]) not in self.counts])
            for r, cand in enumerate(candidates)
        ]
        # a one-vs-many score needs the whole list: a row with any pair missing is redone
        todo = [(r, list(candidates[r]) if contexts[r] else c) for r, c in todo if c]
        if todo:
            queries = [self.sift[rows[r]] for r, _ in todo]
            results = match_pairs(
                queries,
                [self.sift[g] for g in gallery],
                [c for _, c in todo],
                self.config,
                self.workers,
                self.progress,
            )
            for (r, cand), scores in zip(todo, results, strict=True):
                for g, n in zip(cand, scores, strict=True):
                    self.counts[(rows[r], gallery[g], contexts[r])] = float(n)
            self.save()
        out = np.full((len(rows), len(gallery)), -1, dtype=np.float32)
        for r, cand in enumerate(candidates):
            for g in cand:
                out[r, g] = self.counts[(rows[r], gallery[g], contexts[r])]
        return out

    def scores(
        self, rows: Sequence[str], gallery: Sequence[str], shortlist: Shortlist
    ) -> np.ndarray:
        """(rows, n) local scores of the shortlisted pairs, NaN at padding (pairs not yet
        cached are matched now)."""
        dense = self.matrix(pd.Series(list(rows)), pd.Series(list(gallery)), shortlist.lists())
        return shortlist.gather(dense)


class LocalMatcher(Matcher):
    """RANSAC-verified keypoint matches on the animal (`wildid.matching.local`), scored
    against the database.

    An inlier count means more for one query than another: a query with many keypoints
    on grass or a busy coat finds a dozen chance inliers in every gallery photo. With
    `normalise="query"` each count is divided by 1 + the median count of the query's
    whole shortlist (most of which are other individuals: the query's chance level), so a
    pair stands out by how far it rises above what that query gets from the rest of the
    database (HotSpotter's idea of scoring a query against the database, not pair by pair).
    The ranking within a query is unchanged; calibration and fusion across queries are
    what it changes. `"none"` (the default): raw counts, which on nyala decided the open
    set better (per-photo gmean 0.355 against 0.294, benchmarks/README.md): a raw count
    of 30 inliers says "same animal" whatever the query's chance level. The LNBNN scores
    (`LocalConfig.score="lnbnn"`, the pipeline's default) are against the database by
    construction: each vote is weighed by how much nearer it is than the next candidate.
    """

    def __init__(self, pairs: PairCache, normalise: str = "none", name: str = "local") -> None:
        if normalise not in NORMALISE:
            raise ValueError(f"normalise {normalise!r}: expected one of {', '.join(NORMALISE)}.")
        self.pairs, self.normalise, self.name = pairs, normalise, name

    def __call__(
        self, rows: Sequence[str], gallery: Sequence[str], shortlist: Shortlist
    ) -> np.ndarray:
        counts = self.pairs.scores(rows, gallery, shortlist)
        return normalise_counts(counts, self.normalise)


def normalise_counts(counts: np.ndarray, how: str = "query") -> np.ndarray:
    """`LocalMatcher`'s normalisation of a (rows, n) count array (NaN at padding)."""
    if how == "none" or counts.size == 0:
        return counts.astype(np.float32)
    filled = np.where(np.isfinite(counts), counts, np.nan)
    with np.errstate(all="ignore"):
        level = np.nanmedian(np.where(np.isnan(filled).all(axis=1, keepdims=True), 0, filled), 1)
    return (counts / (1.0 + level[:, None])).astype(np.float32)


# --- calibrated fusion -----------------------------------------------------------------------


def same_pairs(shortlist: Shortlist, gallery_ids: np.ndarray, truths: Sequence[str]) -> np.ndarray:
    """(rows, n) True where the shortlisted gallery photo shows the row's individual
    (`truths`; a new_individual row has no same pair)."""
    ids = np.append(np.asarray(gallery_ids, dtype=object), None)
    named = ids[np.where(shortlist.valid, shortlist.columns, len(ids) - 1)]
    return (named == np.asarray(truths, dtype=object)[:, None]) & shortlist.valid


@dataclass(frozen=True)
class FusedScores:
    """What `CalibratedFusion` made of a shortlist: each matcher's raw scores and
    probabilities, and the fused probability (their mean), all (rows, n), NaN at padding."""

    shortlist: Shortlist
    raw: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    fused: np.ndarray | None = None

    def take(self, rows: np.ndarray) -> FusedScores:
        """The scores of some rows only (an index or boolean mask)."""
        return FusedScores(
            Shortlist(self.shortlist.columns[rows]),
            {n: v[rows] for n, v in self.raw.items()},
            {n: v[rows] for n, v in self.probabilities.items()},
            None if self.fused is None else self.fused[rows],
        )

    def dense(self, n_gallery: int, name: str | None = None) -> np.ndarray:
        """(rows, gallery) fused (or matcher `name`'s) probabilities, -inf off the shortlist."""
        values = self.fused if name is None else self.probabilities[name]
        return self.shortlist.dense(np.nan_to_num(values, nan=-np.inf), n_gallery)


def fuse_probabilities(probabilities: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of the matchers' P(same) arrays (a matcher's NaN counts as 0)."""
    stack = np.stack([np.nan_to_num(np.asarray(p, np.float64), nan=0.0) for p in probabilities])
    w = np.asarray(weights, dtype=np.float64).reshape(-1, *([1] * (stack.ndim - 1)))
    return ((stack * w).sum(axis=0) / w.sum()).astype(np.float32)


class CalibratedFusion:
    """WildFusion: the mean of the matchers' calibrated scores.

    `fit` returns a copy with every matcher's isotonic calibration fitted on labelled
    shortlisted pairs; `weights` (one per matcher, default equal) weigh the mean.
    """

    def __init__(
        self,
        matchers: Sequence[Matcher],
        calibrations: Mapping[str, IsotonicCalibration] | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        names = [m.name for m in matchers]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"matchers need distinct names, got {names}.")
        if weights is not None and len(weights) != len(matchers):
            raise ValueError(f"{len(weights)} weights for {len(matchers)} matchers.")
        self.matchers = list(matchers)
        self.calibrations = dict(calibrations or {})
        self.weights = list(weights) if weights is not None else [1.0] * len(matchers)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.matchers]

    def score(
        self, rows: Sequence[str], gallery: Sequence[str], shortlist: Shortlist
    ) -> FusedScores:
        """Stage 2: every matcher's raw scores of the shortlisted pairs."""
        return FusedScores(shortlist, {m.name: m(rows, gallery, shortlist) for m in self.matchers})

    def fit(
        self, scored: FusedScores, same: np.ndarray, source: str, fallback: bool = True
    ) -> CalibratedFusion:
        """A copy calibrated on `scored`'s pairs, `same` (rows, n) telling the pairs of one
        individual (`same_pairs`). Pairs at padding are ignored. A matcher whose pairs are
        all of one kind cannot be calibrated: with `fallback`, its scores are mapped
        linearly onto [0, 1] instead (`uncalibrated`, marked in its source), else
        CalibrationError."""
        valid = scored.shortlist.valid
        calibrations = {}
        for name, raw in scored.raw.items():
            keep = valid & np.isfinite(raw)
            try:
                calibrations[name] = fit_isotonic(raw[keep], same[keep], source)
            except CalibrationError as err:
                if not fallback:
                    raise
                calibrations[name] = uncalibrated(raw[keep], str(err))
        return CalibratedFusion(self.matchers, calibrations, self.weights)

    def calibrate(self, scored: FusedScores) -> FusedScores:
        """Stage 3: P(same) per matcher and their (weighted) mean."""
        missing = [n for n in scored.raw if n not in self.calibrations]
        if missing:
            raise CalibrationError(f"matchers {missing} are not calibrated; call fit first.")
        probabilities = {n: self.calibrations[n](raw) for n, raw in scored.raw.items()}
        fused = fuse_probabilities([probabilities[n] for n in self.names], self.weights)
        fused = np.where(scored.shortlist.valid, fused, np.nan)
        return FusedScores(scored.shortlist, scored.raw, probabilities, fused.astype(np.float32))

    def __call__(
        self, rows: Sequence[str], gallery: Sequence[str], shortlist: Shortlist
    ) -> FusedScores:
        return self.calibrate(self.score(rows, gallery, shortlist))

    def with_weights(self, weights: Sequence[float]) -> CalibratedFusion:
        return CalibratedFusion(self.matchers, self.calibrations, weights)


WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)  # of each matcher after the first (which has 1)


def choose_weights(
    fusion: CalibratedFusion,
    scored: FusedScores,
    same: np.ndarray,
    gallery_ids: np.ndarray,
    truths: Sequence[str],
    grid: Sequence[float] = WEIGHT_GRID,
    folds: int = 2,
) -> list[float]:
    """The matchers' weights in the mean, chosen on labelled calibration rows.

    The first matcher (the shortlist's) weighs 1, each other one a value of `grid`; the
    combination with the best MAP@5 on the rows whose individual is known wins, ties
    going to the one nearest equal weights (WildFusion's plain mean). Cross-fitted: the
    calibrations are fitted on all folds but one and the weights scored on that one, in
    turn, since a calibration scored on its own pairs makes even a matcher of pure noise
    look useful (isotonic regression fits its noise). A matcher that only adds noise for
    this model and catalogue is so turned down, without any query's label."""
    n = len(fusion.matchers)
    known = np.array([t != NEW_INDIVIDUAL for t in truths], dtype=bool)
    if n == 1 or known.sum() < 2 * folds:
        return [1.0] * n
    fold = np.arange(len(truths)) % folds
    combos = [[1.0, *combo] for combo in product(grid, repeat=n - 1)]
    totals = np.zeros(len(combos))
    for k in range(folds):
        train, test = np.flatnonzero(fold != k), np.flatnonzero((fold == k) & known)
        fitted = fusion.fit(scored.take(train), same[train], "cross-fit")
        rows = scored.take(test)
        labels = [truths[r] for r in test]
        for c, weights in enumerate(combos):
            fused = fitted.with_weights(weights).calibrate(rows)
            ranking = rank_shortlist(rows.shortlist, fused.fused, gallery_ids)
            totals[c] += float(map5_curve(ranking, labels, [None])[0]) * len(test)

    def distance(weights: list[float]) -> float:
        return sum(abs(np.log2(w)) if w > 0 else 99.0 for w in weights[1:])

    best = max(range(len(combos)), key=lambda c: (round(totals[c], 9), -distance(combos[c])))
    return combos[best]


def rank_shortlist(
    shortlist: Shortlist, values: np.ndarray, gallery_ids: np.ndarray, k: int = 50
) -> Ranking:
    """Per row, individuals by their best shortlisted photo's value (NaN pairs skipped)."""
    values = np.where(shortlist.valid & np.isfinite(values), values, -np.inf)
    order = np.argsort(-values, axis=1, kind="stable")
    sims = np.take_along_axis(values, order, axis=1)
    columns = np.take_along_axis(shortlist.columns, order, axis=1)
    columns = np.where(np.isfinite(sims), columns, PAD)
    ranking = best_per_individual(sims, columns, np.asarray(gallery_ids))
    return Ranking(ranking.codes[:, :k], ranking.scores[:, :k], ranking.individuals)
