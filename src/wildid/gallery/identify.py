"""Identify new photos against a package's gallery: ranked individuals, never a decision.

For each photo, the top-k individuals by their best-matching gallery photo's cosine
similarity (as the pipeline ranks), with the calibrated probability that each is the
animal (gallery.calibration) and `new_individual` when the best score is below the run's
tuned open-set threshold (or, for a run without one, when the best probability is under
0.5). With `sighting=True` all photos of the call are one encounter: each photo's best
score per individual is averaged over the photos (`matching.sightings.pool_by_sighting`),
and every photo gets that pooled ranking (its own crop and best-matching photos). The
probability of a pooled score uses the same calibration (an approximation: pooled scores
of one animal are a little lower than single-photo best scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

RESULT_COLUMNS = ["query", "rank", "individual_id", "score", "probability"]


@dataclass(frozen=True)
class Candidate:
    rank: int  # 1-based
    individual_id: str
    score: float
    probability: float
    photo: Path  # that individual's best-matching gallery thumbnail


@dataclass(frozen=True)
class QueryResult:
    query: str
    crop: np.ndarray  # RGB uint8, the crop the model saw
    candidates: list[Candidate]
    new_individual: bool


class Identifier:
    """Loads a package's model once; identifies photos against its (growing) gallery."""

    def __init__(self, package) -> None:  # noqa: ANN001 (Package, or a path)
        raise NotImplementedError

    def identify(
        self, photos: Sequence[str | Path], sighting: bool = False, k: int = 5
    ) -> list[QueryResult]:
        raise NotImplementedError


def results_table(results: Sequence[QueryResult]) -> pd.DataFrame:
    """One row per query and rank: query, rank, individual_id, score, probability."""
    raise NotImplementedError


def write_results(results: Sequence[QueryResult], path: str | Path) -> Path:
    """`results_table` as CSV, or JSON (a list of row objects) when `path` ends in .json."""
    raise NotImplementedError


def match_sheet(result: QueryResult, path: str | Path) -> Path:
    """A PNG: the query crop beside each candidate's best-matching photo, score, probability."""
    raise NotImplementedError
