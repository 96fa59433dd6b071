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
