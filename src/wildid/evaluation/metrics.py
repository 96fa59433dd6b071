"""Scores for individual re-identification: Happywhale's MAP@5 and AnimalCLEF's BAKS/BAUS.

MAP@5 follows Kaggle's reference implementation for Happywhale exactly, so a local score
equals the leaderboard score on the same labels::

    def map_per_image(label, predictions):
        try:
            return 1 / (predictions[:5].index(label) + 1)
        except ValueError:
            return 0.0

That is, an image scores 1/rank of the *first* occurrence of its true label among the first
k predictions, and 0 when the label is absent. Two consequences worth knowing:

* Predictions beyond the first k are ignored (a correct 6th label scores 0).
* Duplicates are not removed before ranking: ``["a", "a", "b"]`` with truth ``b`` scores
  1/3, not 1/2, because ``b`` sits at index 2. A repeated correct label is counted once,
  at its first position, so padding a row with copies never helps; it only wastes ranks.

`new_individual` is an ordinary label here: an image of an animal absent from train has
truth `new_individual` and scores 1/rank of wherever `new_individual` was predicted.

BAKS/BAUS are the AnimalCLEF 2025 metrics (balanced accuracy on known / unknown samples)
with the competition's final score being their geometric mean; see `baks`, `baus` and
`baks_baus_gmean` for the exact definitions, taken from the competition's scoring code.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from wildid.data.competition import NEW_INDIVIDUAL, normalise_species
from wildid.errors import WildidError

K = 5


class ScoreError(WildidError, ValueError):
    """A submission cannot be scored against a solution; the message names file and image."""


# --------------------------------------------------------------------------- MAP@k


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")


def average_precision_at_k(pred: Sequence[str], truth: str, k: int = K) -> float:
    """One image's score: 1/(index of first match + 1) within pred[:k], else 0.

    With a single true label per image, average precision reduces to the precision at the
    rank of the first hit; later copies of the true label add nothing (Kaggle's formula).
    """
    _check_k(k)
    head = list(pred[:k])
    return 1.0 / (head.index(truth) + 1) if truth in head else 0.0


def _check_lengths(predictions: Sequence[Sequence[str]], truths: Sequence[str]) -> None:
    if isinstance(truths, str):
        raise TypeError("truths must be a sequence of labels, not a single string.")
    if len(predictions) != len(truths):
        raise ValueError(
            f"{len(predictions)} prediction lists but {len(truths)} truths; "
            "pass one prediction list per image."
        )
    if len(truths) == 0:
        raise ValueError("no images to score; pass at least one image.")


def map_at_k(predictions: Sequence[Sequence[str]], truths: Sequence[str], k: int = K) -> float:
    """Mean over images of `average_precision_at_k` (Kaggle's MAP@5 when k=5).

    Each image weighs the same whatever its individual, as on the leaderboard.
    """
    _check_lengths(predictions, truths)
    scores = [average_precision_at_k(p, t, k) for p, t in zip(predictions, truths, strict=True)]
    return sum(scores) / len(scores)


def top_k_accuracy(
    predictions: Sequence[Sequence[str]], truths: Sequence[str], k: int = K
) -> float:
    """Fraction of images whose true label is anywhere in the first k predictions.

    The ceiling MAP@k could reach by re-ordering the same candidates; the gap between the
    two says how much a better ranking (rather than better candidates) would gain.
    """
    _check_lengths(predictions, truths)
    _check_k(k)
    hits = [t in list(p[:k]) for p, t in zip(predictions, truths, strict=True)]
    return sum(hits) / len(hits)


# --------------------------------------------------------------------------- files


def _read_csv(path: Path, columns: Sequence[str], role: str) -> pd.DataFrame:
    if not path.is_file():
        raise ScoreError(f"{path}: {role} file not found.")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ScoreError(f"{path}: not a readable CSV ({err}).") from err
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ScoreError(
            f"{path}: missing column(s) {missing}; found {list(df.columns)}. "
            f"A {role} file needs {list(columns)}."
        )
    duplicated = df.index[df["image"].duplicated()]
    if len(duplicated):
        row = int(duplicated[0]) + 2  # 1-based, header is row 1
        raise ScoreError(
            f"{path}, row {row}: image '{df.at[duplicated[0], 'image']}' is listed twice; "
            "keep one row per image."
        )
    return df


def _check_same_images(
    sub: pd.DataFrame, sol: pd.DataFrame, sub_path: Path, sol_path: Path
) -> None:
    missing = sol.loc[~sol["image"].isin(sub["image"]), "image"]
    if len(missing):
        raise ScoreError(
            f"{sub_path}: lacks image '{missing.iloc[0]}' ({len(missing)} missing in all) "
            f"listed in {sol_path}; predict every solution image."
        )
    extra = sub.loc[~sub["image"].isin(sol["image"]), "image"]
    if len(extra):
        raise ScoreError(
            f"{sub_path}: image '{extra.iloc[0]}' ({len(extra)} extra in all) is not in "
            f"{sol_path}; remove images that are not in the test set."
        )


def _scored_frame(
    submission: str | Path, solution: str | Path, k: int, columns: Sequence[str]
) -> pd.DataFrame:
    """Solution rows (in solution order) joined to their predictions, with an `ap` column."""
    sub_path, sol_path = Path(submission), Path(solution)
    sub = _read_csv(sub_path, ("image", "predictions"), "submission")
    sol = _read_csv(sol_path, columns, "solution")
    _check_same_images(sub, sol, sub_path, sol_path)
    preds = dict(zip(sub["image"], sub["predictions"].str.split(), strict=True))
    frame = sol[list(columns)].copy()
    frame["ap"] = [
        average_precision_at_k(preds[image], truth, k)
        for image, truth in zip(frame["image"], frame["individual_id"], strict=True)
    ]
    return frame


def score_submission(submission: str | Path, solution: str | Path, k: int = K) -> float:
    """MAP@k of a submission.csv (image, predictions) against a solution.csv.

    Raises ScoreError (naming the file and the image) unless both list the same images,
    because silently scoring a subset would report a score the leaderboard never gives.
    """
    frame = _scored_frame(submission, solution, k, ("image", "individual_id"))
    if frame.empty:
        raise ScoreError(f"{solution}: no rows; nothing to score.")
    return float(frame["ap"].mean())


def _summary(frame: pd.DataFrame) -> dict[str, float | int]:
    new = frame["individual_id"] == NEW_INDIVIDUAL
    known_ap, new_ap = frame.loc[~new, "ap"], frame.loc[new, "ap"]
    nan = float("nan")
    return {
        "images": len(frame),
        "map5": float(frame["ap"].mean()) if len(frame) else nan,
        "known_images": len(known_ap),
        "known_map5": float(known_ap.mean()) if len(known_ap) else nan,
        "new_images": len(new_ap),
        "new_map5": float(new_ap.mean()) if len(new_ap) else nan,
    }


def score_breakdown(submission: str | Path, solution: str | Path) -> pd.DataFrame:
    """MAP@5 per species, then an "all" row, each split into known vs new individuals.

    Columns: species, images, map5, known_images, known_map5, new_images, new_map5
    ("new" means truth `new_individual`; a subset with no images has NaN map5). Species
    names are normalised (SPECIES_FIXES) so typos in a solution do not split a species.
    The split shows whether a score is limited by matching or by the new_individual call.
    """
    columns = ("image", "species", "individual_id")
    frame = _scored_frame(submission, solution, K, columns)
    frame["species"] = normalise_species(frame["species"])
    rows = [{"species": name, **_summary(group)} for name, group in frame.groupby("species")]
    rows.append({"species": "all", **_summary(frame)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- BAKS / BAUS


def _split_known(
    pred_top1: Sequence[str], truths: Sequence[str], unknown_ids: Iterable[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(truth, prediction) pairs for known and for unknown samples."""
    if isinstance(pred_top1, str) or isinstance(truths, str):
        raise TypeError("pred_top1 and truths must be sequences of labels, not strings.")
    if len(pred_top1) != len(truths):
        raise ValueError(f"{len(pred_top1)} predictions but {len(truths)} truths.")
    unknown = {NEW_INDIVIDUAL, *unknown_ids}
    pairs = list(zip(truths, pred_top1, strict=True))
    return [p for p in pairs if p[0] not in unknown], [p for p in pairs if p[0] in unknown]


def _balanced(pairs: list[tuple[str, str]], correct: Callable[[str, str], bool]) -> float:
    """Mean over truth labels of the per-label fraction of `correct(truth, pred)` samples."""
    if not pairs:
        return float("nan")
    by_truth: dict[str, list[bool]] = defaultdict(list)
    for truth, pred in pairs:
        by_truth[truth].append(correct(truth, pred))
    return sum(sum(v) / len(v) for v in by_truth.values()) / len(by_truth)


def baks(pred_top1: Sequence[str], truths: Sequence[str], unknown_ids: Iterable[str] = ()) -> float:
    """Balanced accuracy on known samples (AnimalCLEF 2025).

    Over samples whose truth is a known individual (neither `new_individual` nor in
    `unknown_ids`): the mean over those individuals of the fraction of their samples whose
    top-1 prediction is that individual. Balancing stops a few often-photographed animals
    from dominating. Predicting `new_individual` for a known animal counts as wrong.
    NaN when there is no known sample.
    """
    known, _ = _split_known(pred_top1, truths, unknown_ids)
    return _balanced(known, lambda truth, pred: pred == truth)


def baus(pred_top1: Sequence[str], truths: Sequence[str], unknown_ids: Iterable[str] = ()) -> float:
    """Balanced accuracy on unknown samples (AnimalCLEF 2025).

    Over samples whose truth is `new_individual` or in `unknown_ids`: the mean over those
    truth labels of the fraction of their samples predicted `new_individual`. AnimalCLEF's
    solution keeps the hidden identity of each unknown animal (passed as `unknown_ids`), so
    the balance is over unknown individuals; when all unknown truths are plain
    `new_individual` (Happywhale style) there is one group and BAUS is plain accuracy on
    unknown samples. NaN when there is no unknown sample.
    """
    _, unknown = _split_known(pred_top1, truths, unknown_ids)
    return _balanced(unknown, lambda _truth, pred: pred == NEW_INDIVIDUAL)


def _gmean(pred_top1: Sequence[str], truths: Sequence[str], unknown_ids: set[str]) -> float:
    known, unknown = baks(pred_top1, truths, unknown_ids), baus(pred_top1, truths, unknown_ids)
    known, unknown = (0.0 if math.isnan(x) else x for x in (known, unknown))
    return math.sqrt(known * unknown)


def baks_baus_gmean(
    pred_top1: Sequence[str],
    truths: Sequence[str],
    unknown_ids: Iterable[str] = (),
    groups: Sequence[str] | None = None,
) -> float:
    """AnimalCLEF 2025's score: sqrt(BAKS * BAUS), averaged over `groups` when given.

    As in the competition's scorer, a NaN BAKS or BAUS (no known / no unknown sample in a
    group) counts as 0, so a group without unknowns scores 0, and the geometric mean is
    taken per group (AnimalCLEF: per dataset) before the unweighted mean over groups.
    """
    unknown = set(unknown_ids)
    pred_top1, truths = list(pred_top1), list(truths)  # positional, whatever the index
    if groups is None:
        return _gmean(pred_top1, truths, unknown)
    if len(groups) != len(truths):
        raise ValueError(f"{len(groups)} group labels but {len(truths)} truths.")
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    scores = [
        _gmean([pred_top1[i] for i in idx], [truths[i] for i in idx], unknown)
        for idx in members.values()
    ]
    return sum(scores) / len(scores) if scores else float("nan")
