"""Open set: decide where `new_individual` goes in each query's top 5.

`new_individual` is inserted just before the first candidate whose similarity is below
the threshold, so a query whose best match is weak predicts "new" first, and one with a
strong match predicts "new" only after its confident candidates. The threshold is tuned
on validation queries some of whose individuals were held out of training entirely (they
play the test set's unseen animals). Alternatives: one threshold per species (species
differ in how alike their individuals look), or the "expected fraction of new" rule,
which needs no validation: put "new" first for the fraction of test queries whose best
match is weakest.

Insertion and MAP@5 over a whole threshold grid are numpy operations on the Ranking's
(queries x candidates) arrays, so tuning at competition scale takes well under a second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.infer.retrieval import PAD, Ranking

K = 5
NEW = -2  # code of new_individual in predicted code arrays
ABSENT = -3  # code of a truth that is not in the ranking's vocabulary


def insert_new(
    labels: Sequence[str],
    scores: Sequence[float],
    threshold: float | None,
    fillers: Sequence[str] = (),
    k: int = K,
) -> list[str]:
    """Top-k labels with `new_individual` placed where the scores drop below threshold.

    With threshold None, `new_individual` is never inserted (closed set). Short lists are
    padded with `new_individual` and then `fillers` (e.g. the commonest individuals).
    The reference for `predict_codes`, which does the same for all queries at once.
    """
    out: list[str] = []
    for label, score in zip(labels, scores, strict=True):
        if threshold is not None and score < threshold and NEW_INDIVIDUAL not in out:
            out.append(NEW_INDIVIDUAL)
        if len(out) >= k:
            break
        out.append(label)
    for label in (NEW_INDIVIDUAL, *fillers):
        if len(out) >= k:
            break
        if label not in out:
            out.append(label)
    return out[:k]


def _head(ranking: Ranking, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k candidate columns, padded to exactly k."""
    codes, scores = ranking.codes[:, :k], ranking.scores[:, :k]
    missing = k - codes.shape[1]
    if missing > 0:
        codes = np.pad(codes, ((0, 0), (0, missing)), constant_values=PAD)
        scores = np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf)
    return codes, scores


def insertion_rank(
    scores: np.ndarray, threshold: float | np.ndarray | None, k: int = K
) -> np.ndarray:
    """Rank (0-based) at which `new_individual` goes per query; k means not in the top k.

    That is the number of leading candidates scoring at least the threshold; with no
    threshold, the number of candidates (so "new" only pads a short list). `threshold`
    may be one value or one per query (per-species thresholds). Scores are best first,
    padding is -inf, so counting suffices.
    """
    head = scores[:, :k]
    if threshold is None:
        return np.isfinite(head).sum(axis=1)
    # Compared in the scores' precision, so a threshold equal to a float32 score (0.7
    # stored as 0.69999999) still counts as reached, as the float64 comparison intends.
    t = np.asarray(threshold, dtype=np.float64).astype(head.dtype)
    t = t[:, None] if t.ndim == 1 else t
    return (head >= t).sum(axis=1)


def predict_codes(ranking: Ranking, threshold: float | np.ndarray | None, k: int = K) -> np.ndarray:
    """(queries, k) codes: candidates with NEW inserted at `insertion_rank`, PAD after the end."""
    codes, scores = _head(ranking, k)
    cut = insertion_rank(scores, threshold, k)[:, None]
    cols = np.arange(k)[None, :]
    source = np.clip(cols - (cols > cut), 0, k - 1)
    out = np.take_along_axis(codes, source, 1)
    return np.where(cols == cut, NEW, out)


def predict(
    ranking: Ranking,
    threshold: float | np.ndarray | None,
    fillers: Sequence[str] = (),
    k: int = K,
) -> list[list[str]]:
    """Top-k labels per query (see `insert_new`); short rows are padded with `fillers`."""
    codes = predict_codes(ranking, threshold, k)
    names = np.concatenate([ranking.individuals.astype(object), [NEW_INDIVIDUAL, ""]])
    index = np.where(codes == NEW, len(ranking.individuals), codes)
    index = np.where(codes == PAD, len(ranking.individuals) + 1, index)
    rows = names[index].tolist()
    for q in np.flatnonzero((codes == PAD).any(axis=1)):  # rare: fewer than k candidates
        row = [x for x in rows[q] if x]
        row += [f for f in dict.fromkeys(fillers) if f not in row][: k - len(row)]
        rows[q] = row
    return rows


def truth_codes(ranking: Ranking, truths: Sequence[str]) -> np.ndarray:
    """Each truth as a code of the ranking's vocabulary (NEW, or ABSENT if not in it)."""
    truths = np.asarray(truths, dtype=str)
    names = ranking.individuals.astype(str)
    pos = np.searchsorted(names, truths)
    found = (
        (pos < len(names)) & (names[np.clip(pos, 0, max(len(names) - 1, 0))] == truths)
        if len(names)
        else np.zeros(len(truths), dtype=bool)
    )
    return np.where(truths == NEW_INDIVIDUAL, NEW, np.where(found, pos, ABSENT))


def map5_curve(
    ranking: Ranking,
    truths: Sequence[str],
    thresholds: Sequence[float | None],
    k: int = K,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """MAP@k for each threshold (None: closed set), identical to scoring `predict`'s output
    (with `weights`, each query's precision counts that much in the mean).

    A known truth at candidate position j lands at rank j, or j + 1 when "new" is inserted
    before it; a `new_individual` truth lands at the insertion rank.
    """
    if len(truths) != len(ranking):
        raise ValueError(f"{len(truths)} truths for {len(ranking)} ranked queries.")
    codes, scores = _head(ranking, k)
    truth = truth_codes(ranking, truths)
    hit = codes == truth[:, None]
    position = np.where(hit.any(axis=1), hit.argmax(axis=1), 10 * k)
    is_new = truth == NEW
    out = []
    for threshold in thresholds:
        cut = insertion_rank(scores, threshold, k)
        rank = np.where(is_new, cut, position + (cut <= position))
        out.append(float(np.average(np.where(rank < k, 1.0 / (rank + 1), 0.0), weights=weights)))
    return np.array(out)


def tune_threshold(
    ranking: Ranking,
    truths: Sequence[str],
    grid: Sequence[float],
    weights: np.ndarray | None = None,
) -> tuple[float, list[tuple[float, float]]]:
    """The threshold with the best (optionally query-weighted) MAP@5 on validation, and
    the whole curve.

    Ties go to the lower threshold, which predicts `new_individual` less often.
    """
    grid = sorted(float(t) for t in grid)
    curve = list(
        zip(grid, map5_curve(ranking, truths, grid, weights=weights).tolist(), strict=True)
    )
    best = max(curve, key=lambda item: (item[1], -item[0]))
    return best[0], curve


def top1_scores(ranking: Ranking) -> np.ndarray:
    return np.where(np.isfinite(ranking.top1), ranking.top1, -1.0)


def fraction_threshold(ranking: Ranking, fraction: float) -> float:
    """The threshold below which `fraction` of the queries' best scores fall.

    The "expected fraction of new" rule: if about a fifth of test images show animals
    absent from train (Happywhale), the fifth with the weakest best match are called new.
    """
    return float(np.quantile(top1_scores(ranking), fraction))


def predicted_species(ranking: Ranking, species_of: Mapping[str, str]) -> np.ndarray:
    """Each query's species: that of its top-1 candidate ("" without one)."""
    lookup = np.array(
        [species_of.get(str(x), "") for x in ranking.individuals] + [""], dtype=object
    )
    top = ranking.codes[:, 0] if ranking.codes.shape[1] else np.full(len(ranking), PAD)
    return lookup[np.where(top >= 0, top, len(ranking.individuals))]


@dataclass(frozen=True)
class Threshold:
    """Where "new" goes: one global threshold, optionally overridden per species."""

    value: float | None
    source: str  # fixed, tuned, fraction, members, none
    curve: list[tuple[float, float]] = field(default_factory=list)
    per_species: dict[str, float] = field(default_factory=dict)

    def for_queries(self, species: np.ndarray | None = None) -> float | np.ndarray | None:
        """The threshold for each query (an array when per-species values apply)."""
        if self.value is None or not self.per_species or species is None:
            return self.value
        return np.array([self.per_species.get(s, self.value) for s in species], dtype=float)


def tune_per_species(
    ranking: Ranking,
    truths: Sequence[str],
    grid: Sequence[float],
    species: np.ndarray,
    min_queries: int,
) -> dict[str, float]:
    """One tuned threshold per (predicted) species that validation can actually inform.

    A species needs `min_queries` queries, at least two of them of held-out individuals
    and two of known ones: without new ones its MAP@5 only falls as the threshold rises,
    and tuning would switch `new_individual` off for it (seen on the mini-competition,
    where that cost test MAP@5). Other species keep the global threshold.
    """
    truths = np.asarray(truths, dtype=object)
    out = {}
    for name in sorted(set(species.tolist()) - {""}):
        rows = np.flatnonzero(species == name)
        new = int((truths[rows] == NEW_INDIVIDUAL).sum())
        if len(rows) >= min_queries and new >= 2 and len(rows) - new >= 2:
            subset = Ranking(ranking.codes[rows], ranking.scores[rows], ranking.individuals)
            out[name] = tune_threshold(subset, truths[rows].tolist(), grid)[0]
    return out


def choose_threshold(
    retrieval,
    val_ranking: Ranking | None,
    truths: Sequence[str],
    test_ranking: Ranking,
    species_of: Mapping[str, str] | None = None,
) -> Threshold:
    """The threshold a RetrievalConfig asks for: fixed, fraction rule, or tuned on validation.

    The validation curve is computed whenever there are validation queries, so the plot
    shows where a fixed or fraction-rule threshold sits on it.
    """
    grid = retrieval.threshold_grid
    curve = tune_threshold(val_ranking, truths, grid)[1] if truths else []
    if retrieval.threshold is not None:
        return Threshold(retrieval.threshold, "fixed", curve)
    if retrieval.new_fraction is not None:
        return Threshold(
            fraction_threshold(test_ranking, retrieval.new_fraction), "fraction", curve
        )
    if not truths:
        return Threshold(None, "none")
    value = max(curve, key=lambda item: (item[1], -item[0]))[0]
    if getattr(retrieval, "operating_point", "map5") == "gmean":
        value = choose_operating_points(val_ranking, truths, grid=grid).gmean
    per_species = {}
    if retrieval.per_species and species_of is not None:
        per_species = tune_per_species(
            val_ranking,
            truths,
            grid,
            predicted_species(val_ranking, species_of),
            retrieval.species_min_queries,
        )
    return Threshold(value, "tuned", curve, per_species)


# --- operating points: MAP@5-optimal and gmean(BAKS, BAUS)-optimal --------------------------

OPERATING_POINTS = ("map5", "gmean")


def balanced_curve(
    ranking: Ranking, truths: Sequence[str], thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """BAKS and BAUS (AnimalCLEF 2025) of the top-1 decision at each threshold: a query
    is called `new_individual` when its best score is below the threshold.

    BAKS: over known truths, the mean per individual of the share of its queries whose
    top-1 is that individual and not called new; BAUS: the share of new queries called
    new. The same as `wildid.evaluation.metrics.baks` / `baus` on `predict`'s top-1s, for
    every threshold at once; NaN when there is no known (BAKS) or no new (BAUS) query.
    """
    if len(truths) != len(ranking):
        raise ValueError(f"{len(truths)} truths for {len(ranking)} ranked queries.")
    codes, scores = _head(ranking, 1)
    top, best = codes[:, 0], scores[:, 0]
    truth = truth_codes(ranking, truths)
    is_new = truth == NEW
    right = (top == truth) & ~is_new
    t = np.asarray(thresholds, dtype=np.float64).astype(best.dtype)[:, None]
    called_known = best[None, :] >= t  # (thresholds, queries)
    known_rows = np.flatnonzero(~is_new)
    if len(known_rows):
        names = np.asarray(truths, dtype=object)[known_rows]
        _, group = np.unique(names.astype(str), return_inverse=True)
        hits = (called_known[:, known_rows] & right[known_rows]).astype(np.float64)
        per = np.zeros((len(t), group.max() + 1))
        np.add.at(per.T, group, hits.T)
        counts = np.bincount(group).astype(np.float64)
        baks = (per / counts).mean(axis=1)
    else:
        baks = np.full(len(t), np.nan)
    baus = (~called_known[:, is_new]).mean(axis=1) if is_new.any() else np.full(len(t), np.nan)
    return baks, baus


@dataclass(frozen=True)
class OperatingPoints:
    """The two open-set thresholds, each chosen on labelled calibration queries (never on
    the queries it is applied to): `map5`, the best (new-share weighted) MAP@5; `gmean`,
    the best sqrt(BAKS * BAUS). `curve` holds, per grid threshold, the calibration
    figures (threshold, map5, baks, baus, gmean)."""

    map5: float
    gmean: float
    curve: list[dict[str, float]] = field(default_factory=list)

    def threshold(self, point: str) -> float:
        if point not in OPERATING_POINTS:
            raise ValueError(f"operating point {point!r}: expected one of {OPERATING_POINTS}.")
        return self.map5 if point == "map5" else self.gmean

    def at(self, point: str) -> dict[str, float]:
        """The calibration figures at one operating point."""
        t = self.threshold(point)
        return min(self.curve, key=lambda row: abs(row["threshold"] - t)) if self.curve else {}


def threshold_grid(ranking: Ranking, steps: int | None = 101) -> list[float]:
    """Candidate thresholds: quantiles of the queries' best scores (`steps` None: every
    distinct one, so no threshold does better), and one above all (every query called new)."""
    best = ranking.scores[:, 0] if ranking.scores.size else np.zeros(0)
    best = best[np.isfinite(best)]
    if len(best) == 0:
        return [float("inf")]
    cuts = best if steps is None else np.quantile(best, np.linspace(0, 1, steps))
    grid = sorted({float(v) for v in cuts})
    grid.append(grid[-1] + max(1e-6, 1e-6 * abs(grid[-1])))
    return grid


def choose_operating_points(
    ranking: Ranking,
    truths: Sequence[str],
    weights: np.ndarray | None = None,
    grid: Sequence[float] | None = None,
) -> OperatingPoints:
    """The MAP@5-optimal and the gmean-optimal thresholds on calibration queries.

    `weights` weigh the calibration queries in MAP@5 (e.g. to the share of new queries
    expected, `wildid.evaluation.protocols.share_weights`); BAKS and BAUS are balanced
    accuracies, so the share of new queries does not move the gmean optimum. Ties go to
    the lower threshold (fewer queries called new). With no new calibration query the
    gmean is 0 everywhere and its point falls back to the MAP@5 one.
    """
    grid = sorted(float(g) for g in (grid if grid is not None else threshold_grid(ranking)))
    map5 = map5_curve(ranking, truths, grid, weights=weights)
    baks, baus = balanced_curve(ranking, truths, grid)
    gmean = np.sqrt(np.nan_to_num(baks) * np.nan_to_num(baus))
    best_map5 = grid[int(np.argmax(map5))]
    best_gmean = grid[int(np.argmax(gmean))] if gmean.max() > 0 else best_map5
    curve = [
        {
            "threshold": float(t),
            "map5": float(m),
            "baks": float(k),
            "baus": float(u),
            "gmean": float(g),
        }
        for t, m, k, u, g in zip(grid, map5, baks, baus, gmean, strict=True)
    ]
    return OperatingPoints(float(best_map5), float(best_gmean), curve)
