"""k-fold splits by individual: roles, held-out individuals, out-of-fold coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.data.folds import fold_split, make_folds, split_validation


def _train(seed: int = 0) -> pd.DataFrame:
    """60 individuals with 1-12 images each, as skewed as Happywhale's."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.zipf(1.6, size=60), 1, 12)
    ids = [f"id{i:02d}" for i, n in enumerate(sizes) for _ in range(n)]
    return pd.DataFrame(
        {
            "image": [f"{k:04d}.jpg" for k in range(len(ids))],
            "species": "whale",
            "individual_id": ids,
        }
    )


@pytest.mark.parametrize("n_folds", [2, 3, 5])
def test_folds_roles(n_folds: int) -> None:
    train = _train()
    folds = make_folds(train, n_folds, new_fraction=0.2, seed=0)
    assert len(folds) == n_folds * len(train)
    counts = train.groupby("individual_id").size()
    singles = set(counts.index[counts == 1])
    val = folds[folds["role"] == "val"]
    # Single-image individuals never leave train.
    assert not val["individual_id"].isin(singles).any()
    # Every image of a 2+ individual is validated in exactly one fold (out-of-fold).
    per_image = val.groupby("image").size()
    multi_images = train.loc[~train["individual_id"].isin(singles), "image"]
    assert set(per_image.index) == set(multi_images)
    assert (per_image == 1).all()
    for k in range(n_folds):
        split = fold_split(folds, k)
        fit = split[split["role"] == "train"]
        known = split[(split["role"] == "val") & (split["val_truth"] != NEW_INDIVIDUAL)]
        new = split[split["val_truth"] == NEW_INDIVIDUAL]
        # A known validation image's individual keeps images in this fold's train ...
        assert known["individual_id"].isin(set(fit["individual_id"])).all()
        # ... a new one has none there, and is validated whole.
        assert not new["individual_id"].isin(set(fit["individual_id"])).any()
        assert (new["role"] == "val").all()
        assert len(split) == len(train) and list(split["image"]) == list(train["image"])
    # Held-out individuals make up about new_fraction of validation, and every fold has some.
    new_share = (val["val_truth"] == NEW_INDIVIDUAL).mean()
    assert 0.1 <= new_share <= 0.35
    assert val.loc[val["val_truth"] == NEW_INDIVIDUAL, "fold"].nunique() == n_folds


def test_folds_are_balanced_and_seeded() -> None:
    train = _train()
    folds = make_folds(train, 4, 0.2, seed=3)
    sizes = folds[folds["role"] == "val"].groupby("fold").size()
    assert sizes.max() <= 1.5 * sizes.min()
    pd.testing.assert_frame_equal(folds, make_folds(train, 4, 0.2, seed=3))
    assert not folds.equals(make_folds(train, 4, 0.2, seed=4))


def test_one_fold_is_the_validation_split() -> None:
    train = _train()
    folds = make_folds(train, 1, 0.2, seed=1, val_fraction=0.25)
    expected = split_validation(train, 0.25, 0.2, 1)
    pd.testing.assert_frame_equal(fold_split(folds, 0), expected)
    pd.testing.assert_frame_equal(fold_split(expected, 0), expected)
    with pytest.raises(ValueError, match="fold 1"):
        fold_split(folds, 1)
