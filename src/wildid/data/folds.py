"""Split a competition's train set for validation the way the test set is split.

About a fifth of Happywhale's test images are individuals never seen in train, so the
validation split holds some individuals out whole: they play `new_individual`, and the
threshold tuned on them transfers to the test set. Individuals with one image always
stay in train, since as queries they could never be matched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wildid.data.competition import NEW_INDIVIDUAL


def split_validation(
    train: pd.DataFrame, val_fraction: float, new_fraction: float, seed: int
) -> pd.DataFrame:
    """Return `train` with a `role` column ('train' or 'val') and a `val_truth` column.

    About `val_fraction` of the images go to validation. Of those, about `new_fraction`
    come from individuals held out whole (truth `new_individual`); the rest are images of
    individuals that keep at least one image in train.
    """
    rng = np.random.default_rng(seed)
    df = train.reset_index(drop=True).copy()
    df["role"] = "train"
    counts = df.groupby("individual_id").size()
    multi = np.array(sorted(counts.index[counts >= 2]))
    target_val = val_fraction * len(df)
    held_out = _hold_out(rng.permutation(multi), counts, new_fraction * target_val)
    df.loc[df["individual_id"].isin(held_out), "role"] = "val"
    known_budget = int(round(target_val)) - int((df["role"] == "val").sum())
    known = df[df["individual_id"].isin(set(multi) - set(held_out))]
    # Each individual keeps its first image (in a shuffled order) in train; a random
    # subset of the others goes to validation.
    shuffled = known.sample(frac=1.0, random_state=int(rng.integers(2**31)))
    eligible = shuffled[shuffled.groupby("individual_id").cumcount() > 0].index.to_numpy()
    chosen = rng.permutation(eligible)[: max(known_budget, 0)]
    df.loc[chosen, "role"] = "val"
    df["val_truth"] = np.where(
        df["individual_id"].isin(held_out), NEW_INDIVIDUAL, df["individual_id"]
    )
    return df


def _hold_out(candidates: np.ndarray, counts: pd.Series, budget: float) -> list[str]:
    """Individuals to hold out whole, in the given order, until `budget` images are held."""
    held: list[str] = []
    total = 0
    for ind in candidates:
        if total >= budget:
            break
        if total + counts[ind] <= max(budget * 1.5, 2):
            held.append(str(ind))
            total += int(counts[ind])
    return held


def make_folds(
    train: pd.DataFrame,
    n_folds: int,
    new_fraction: float,
    seed: int,
    val_fraction: float = 0.2,
) -> pd.DataFrame:
    """Every fold's split of `train`: one row per (fold, image), the columns of `train` plus
    `fold`, `role` and `val_truth` (see `split_validation`).

    `n_folds == 1` is `split_validation(train, val_fraction, ...)`. With k >= 2 folds the
    images of each individual with 2+ images are dealt round-robin over the folds (from a
    random fold onwards), so each validates about 1/k of them while the others stay in
    its train. On top of that, individuals holding about `new_fraction` of those images are
    held out whole of one fold each and play `new_individual` in its validation.
    Single-image individuals are always in train. Every image of a 2+ individual is
    validated in exactly one fold: together the folds give out-of-fold embeddings of them.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds={n_folds}: need at least 1.")
    if n_folds == 1:
        return split_validation(train, val_fraction, new_fraction, seed).assign(fold=0)
    rng = np.random.default_rng(seed)
    df = train.reset_index(drop=True)
    counts = df.groupby("individual_id").size()
    multi = np.array(sorted(counts.index[counts >= 2]))
    held = _hold_out(rng.permutation(multi), counts, new_fraction * counts[multi].sum())
    held_fold = _balance(held, counts, n_folds)
    # Round-robin per individual in a shuffled image order, from a random first fold.
    offsets = pd.Series(rng.integers(n_folds, size=len(multi)), index=multi)
    shuffled = df.sample(frac=1.0, random_state=int(rng.integers(2**31)))
    start = shuffled["individual_id"].map(offsets).fillna(0).astype(int)
    val_fold = ((shuffled.groupby("individual_id").cumcount() + start) % n_folds).sort_index()
    is_multi = df["individual_id"].isin(set(multi)).to_numpy()
    held_of = df["individual_id"].map(held_fold)
    frames = []
    for fold in range(n_folds):
        new = (held_of == fold).to_numpy()
        known_val = is_multi & held_of.isna().to_numpy() & (val_fold == fold).to_numpy()
        role = np.where(new | known_val, "val", "train")
        truth = np.where(new, NEW_INDIVIDUAL, df["individual_id"])
        frames.append(df.assign(role=role, val_truth=truth, fold=fold))
    return pd.concat(frames, ignore_index=True)


def _balance(individuals: list[str], counts: pd.Series, n_folds: int) -> dict[str, int]:
    """Assign individuals to folds, largest first to the fold with fewest images so far."""
    load = np.zeros(n_folds)
    assigned = {}
    for ind in sorted(individuals, key=lambda i: (-int(counts[i]), i)):
        fold = int(np.argmin(load))
        assigned[ind] = fold
        load[fold] += counts[ind]
    return assigned


def read_folds(path: str | Path) -> pd.DataFrame:
    """folds.csv as written by `make_folds` (every column a string but `fold`)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False).astype({"fold": int})


def fold_split(folds: pd.DataFrame, fold: int) -> pd.DataFrame:
    """One fold of a `make_folds` table, in the format of `split_validation`."""
    if "fold" not in folds.columns:  # already a single split
        if fold != 0:
            raise ValueError(f"fold {fold} asked of a table holding one split (fold 0).")
        return folds.reset_index(drop=True)
    rows = folds[folds["fold"] == fold]
    if rows.empty:
        have = sorted(folds["fold"].unique())
        raise ValueError(f"fold {fold} not in the folds table (it has folds {have}).")
    return rows.drop(columns="fold").reset_index(drop=True)
