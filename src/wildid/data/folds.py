"""Split a competition's train set for validation the way the test set is split.

About a fifth of Happywhale's test images are individuals never seen in train, so the
validation split holds some individuals out whole: they play `new_individual`, and the
threshold tuned on them transfers to the test set. Individuals with one image always
stay in train, since as queries they could never be matched.
"""

from __future__ import annotations

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
