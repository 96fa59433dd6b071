"""Matchers behind one interface, and the shortlist of pairs they score.

A matcher scores (query, gallery photo) pairs on its own scale, higher = more alike: the
cosine of a global embedding (`CosineMatcher`), RANSAC-verified local keypoints
(`wildid.matching.local.LocalMatcher`), anything else. Local matching is far too slow for
every pair, so every matcher scores the same `Shortlist`: per query, the gallery photos a
fast priority score ranks best (WildFusion's "B" candidates per query). The scores come
back as a (rows, n) array aligned with the shortlist's columns, NaN where a row's list is
shorter (padding), so matchers are interchangeable and their outputs stack.

Rows and gallery photos are named by image (the keys of a matcher's features), so one
matcher serves queries and leave-one-sighting-out gallery pseudo-queries alike.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PAD = -1  # shortlist column of a padding slot


@dataclass(frozen=True)
class Shortlist:
    """(rows, n) gallery columns per row, best first by the priority score, PAD after the
    end of a short row (a row allowed to see fewer than n gallery photos)."""

    columns: np.ndarray

    def __post_init__(self) -> None:
        if self.columns.ndim != 2:
            raise ValueError(f"shortlist columns must be 2-d, got shape {self.columns.shape}.")

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def valid(self) -> np.ndarray:
        return self.columns != PAD

    @classmethod
    def top(cls, scores: np.ndarray, n: int) -> Shortlist:
        """The top-n allowed (finite) columns of each row of a dense (rows, gallery) score
        matrix; ties keep the lower column first."""
        n = max(0, min(int(n), scores.shape[1]))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        finite = np.isfinite(np.take_along_axis(scores, order, axis=1))
        return cls(np.where(finite, order, PAD).astype(np.int64))

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> Shortlist:
        n = max((len(r) for r in rows), default=0)
        columns = np.full((len(rows), n), PAD, dtype=np.int64)
        for i, r in enumerate(rows):
            columns[i, : len(r)] = r
        return cls(columns)

    def lists(self) -> list[np.ndarray]:
        """Each row's columns without padding."""
        return [row[row != PAD] for row in self.columns]

    def gather(self, dense: np.ndarray) -> np.ndarray:
        """A dense (rows, gallery) matrix's values at the shortlist (NaN at padding)."""
        values = np.take_along_axis(dense, np.clip(self.columns, 0, None), axis=1)
        return np.where(self.valid, values, np.nan).astype(np.float32)

    def dense(self, values: np.ndarray, n_gallery: int, fill: float = -np.inf) -> np.ndarray:
        """(rows, n_gallery) with each shortlisted pair's value and `fill` elsewhere."""
        out = np.full((len(self), n_gallery), fill, dtype=np.float32)
        rows, slots = np.nonzero(self.valid)
        out[rows, self.columns[rows, slots]] = values[rows, slots]
        return out


class Matcher(ABC):
    """Scores shortlisted pairs. `name` labels its column in tables and calibrations."""

    name: str = "matcher"

    @abstractmethod
    def __call__(
        self, rows: Sequence[str], gallery: Sequence[str], shortlist: Shortlist
    ) -> np.ndarray:
        """(rows, n) raw scores of (rows[r], gallery[shortlist.columns[r, j]]), NaN at
        padding; higher = more alike."""


class CosineMatcher(Matcher):
    """The dot product of two images' unit feature vectors (a global embedding)."""

    def __init__(self, features: Mapping[str, np.ndarray], name: str = "global") -> None:
        self.features, self.name = features, name

    def __call__(
        self, rows: Sequence[str], gallery: Sequence[str], shortlist: Shortlist
    ) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros(shortlist.columns.shape, np.float32)
        a = np.stack([self.features[i] for i in rows]).astype(np.float32)
        b = np.stack([self.features[i] for i in gallery]).astype(np.float32)
        picked = b[np.clip(shortlist.columns, 0, None)]  # (rows, n, dim)
        scores = np.einsum("rd,rnd->rn", a, picked)
        return np.where(shortlist.valid, scores, np.nan).astype(np.float32)


class PrecomputedMatcher(Matcher):
    """Scores already in a dense (rows, gallery) matrix, for rows named in `row_names`
    and gallery photos in `gallery_names` (e.g. a search's similarities)."""

    def __init__(
        self,
        dense: np.ndarray,
        row_names: Sequence[str],
        gallery_names: Sequence[str],
        name: str = "global",
    ) -> None:
        self.dense, self.name = dense, name
        self.row_index = {n: i for i, n in enumerate(row_names)}
        self.gallery_index = {n: i for i, n in enumerate(gallery_names)}

    def __call__(
        self, rows: Sequence[str], gallery: Sequence[str], shortlist: Shortlist
    ) -> np.ndarray:
        r = np.array([self.row_index[i] for i in rows], dtype=np.int64)
        g = np.array([self.gallery_index[i] for i in gallery], dtype=np.int64)
        sub = self.dense[r][:, g] if len(r) else np.zeros((0, len(g)), np.float32)
        return shortlist.gather(sub)


class CentredMatcher(Matcher):
    """Another matcher's scores minus the median of the row's shortlist: how far a pair
    stands out from what the query gets from the rest of the database.

    A query of a known animal has one individual rising above the crowd; a query of a new
    one meets a flat crowd, perhaps at high cosines (a similar-looking population). The
    row's order is unchanged; across rows, centring makes the scores of queries with
    different similarity levels comparable, for calibration and the open-set threshold.
    """

    def __init__(self, inner: Matcher, name: str | None = None) -> None:
        self.inner, self.name = inner, name or f"{inner.name}-centred"

    def __call__(
        self, rows: Sequence[str], gallery: Sequence[str], shortlist: Shortlist
    ) -> np.ndarray:
        scores = self.inner(rows, gallery, shortlist)
        if scores.size == 0:
            return scores
        finite = np.where(np.isfinite(scores), scores, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a row with nothing scored
            level = np.nan_to_num(np.nanmedian(finite, axis=1), nan=0.0)
        return (scores - level[:, None]).astype(np.float32)


POOLS = ("max", "sum")


def pool_per_owner(scores: np.ndarray, owners: np.ndarray, how: str) -> np.ndarray:
    """`scores` (rows, columns) pooled per owner within each row: with `how="sum"` each
    finite score becomes the sum of its row's finite scores of the same owner; "max" keeps
    them (an owner is then scored by its best, as a ranking does anyway). `owners`: the
    same shape, non-negative integer codes; -1 marks a cell that is neither counted nor
    changed."""
    if how not in POOLS:
        raise ValueError(f"pool {how!r}: expected one of {', '.join(POOLS)}.")
    scores = np.asarray(scores, dtype=np.float32)
    if how == "max" or scores.size == 0:
        return scores
    counted = (owners >= 0) & np.isfinite(scores)
    n_owners = int(owners.max()) + 1 if counted.any() else 1
    keys = np.arange(len(scores))[:, None] * n_owners + np.clip(owners, 0, None)
    totals = np.bincount(keys[counted], weights=scores[counted], minlength=keys.size)
    return np.where(counted, totals[keys], scores).astype(np.float32)


class PooledMatcher(Matcher):
    """Another matcher's scores pooled per individual: each shortlisted pair gets the sum
    of the inner scores of every shortlisted photo of its individual (`how="sum"`), or
    keeps its own (`"max"`: the individual is then scored by its best photo, as a ranking
    does anyway).

    HotSpotter's name scoring: evidence spread over several photos of one animal (one
    shows the left shoulder's stripes, another the flank's) adds up, where the best photo
    alone sees only part of it. `individual_of` names each gallery image's individual.
    """

    def __init__(
        self,
        inner: Matcher,
        individual_of: Mapping[str, str],
        how: str = "max",
        name: str | None = None,
    ) -> None:
        if how not in POOLS:
            raise ValueError(f"pool {how!r}: expected one of {', '.join(POOLS)}.")
        self.inner, self.individual_of, self.how = inner, individual_of, how
        self.name = name or inner.name

    def __call__(
        self, rows: Sequence[str], gallery: Sequence[str], shortlist: Shortlist
    ) -> np.ndarray:
        scores = self.inner(rows, gallery, shortlist)
        if self.how == "max" or scores.size == 0:
            return scores
        _, codes = np.unique([self.individual_of[g] for g in gallery], return_inverse=True)
        owners = np.where(shortlist.valid, codes[np.clip(shortlist.columns, 0, None)], -1)
        return pool_per_owner(scores, owners, self.how)
