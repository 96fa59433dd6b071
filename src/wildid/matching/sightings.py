"""Per-sighting pooling: the photos of one encounter vote together.

A sighting (an encounter, the catalogue's `group`) often holds several photos of one
animal, say its left and right flank. Each photo alone is compared with same-flank gallery
photos only, so one photo may see an individual's matching flank and the other not; pooled,
each individual's best score per photo is averaged over the sighting's photos, and every
photo of the sighting gets that one pooled row. Only meaningful when a sighting holds a
single animal (`one_individual_per_sighting`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from wildid.evaluation.protocols import Calibration


def one_individual_per_sighting(table: pd.DataFrame) -> bool:
    """Whether every sighting (`group`) of the table holds photos of one individual only."""
    return bool((table.groupby("group")["individual_id"].nunique() == 1).all())


def pool_by_sighting(
    scores: np.ndarray, ids: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(rows x individuals) scores where each photo takes the mean, over the photos of its
    sighting, of each individual's best score: one encounter's left and right photos vote
    together. Only meaningful when a sighting holds one animal (checked by the caller).

    `scores` is (rows x gallery) with -inf for pairs not compared, `ids` the gallery's
    individuals and `groups` each row's sighting. An individual a photo compared with no
    photo of (all -inf) counts as that photo's worst finite best score (0 if it has none):
    a photo that did not see it neither lifts it nor sinks it below the individuals that
    photo did see. Returns the pooled scores and the
    individuals (sorted, `np.unique(ids)`) naming their columns.
    """
    individuals = np.unique(ids)
    best = np.full((len(scores), len(individuals)), -np.inf, dtype=np.float32)
    for k, individual in enumerate(individuals):
        best[:, k] = scores[:, ids == individual].max(axis=1)
    finite = np.where(np.isfinite(best), best, np.nan)
    with warnings.catch_warnings():  # a row with nothing finite: its floor is 0
        warnings.simplefilter("ignore", RuntimeWarning)
        floor = np.nan_to_num(np.nanmin(finite, axis=1, keepdims=True), nan=0.0)
    filled = np.where(np.isfinite(best), best, floor)
    pooled = np.empty_like(filled)
    for group in np.unique(groups):
        members = groups == group
        pooled[members] = filled[members].mean(axis=0)
    return pooled, individuals


def pool_calibration(
    cal_scores: np.ndarray, ids: np.ndarray, cal: Calibration, gallery_groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, Calibration]:
    """`pool_by_sighting` for leave-one-sighting-out pseudo-queries.

    `cal_scores` is (calibration rows x gallery); the row's own sighting (`cal.mask`) is
    dropped before pooling, so the pooled (rows x individuals) scores need no mask: the
    returned calibration keeps rows and truths with an all-True mask. `gallery_groups` is
    each gallery photo's sighting. Returns pooled scores, individuals, calibration.
    """
    pooled, individuals = pool_by_sighting(
        np.where(cal.mask, cal_scores, -np.inf), ids, gallery_groups[cal.rows]
    )
    return pooled, individuals, Calibration(cal.rows, cal.truths, np.ones_like(pooled, dtype=bool))
