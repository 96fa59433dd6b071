"""Global + local score fusion: a global model's cosine plus SIFT inliers on its shortlist.

Each query is matched with SIFT + RANSAC (`wildid.matching.local`) only against the top-n
gallery photos of a global score (`shortlist`), since matching is the slow part; the
inlier counts are kept by (query image, gallery image) in a `PairCache`, so overlapping
shortlists and re-runs match each pair once. The fused score is

    cosine + w * log(1 + inliers)

on the shortlist (`fuse`; pairs off the shortlist keep their cosine). The weight `w` is
chosen on leave-one-sighting-out gallery pseudo-queries (`choose_weight`), never on the
queries; `fusion_weights` says which weight a protocol uses and where it comes from.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.evaluation.protocols import (
    Calibration,
    Protocol,
    closed_scores,
    rank,
    trains_on_calibration,
)
from wildid.io import write_csv
from wildid.matching.local import Features, LocalConfig, match_pairs

FUSION_WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # the grid `choose_weight` searches


def shortlist(scores: np.ndarray, n: int) -> list[np.ndarray]:
    """Top-n allowed (finite) gallery columns of each row, best first (ties: lower column)."""
    rows = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:n]
        rows.append(order[np.isfinite(row[order])])
    return rows


class PairCache:
    """Inlier counts by (query image, gallery image): the SIFT and fusion shortlists
    overlap, and matching is the slow part.

    `sift` maps each image to its extracted features; with `file`, the counts are read from
    that CSV (query, gallery, inliers) and written back after each batch of new matches, so
    name it by the matcher settings (a re-run with other fusion or protocol settings then
    skips the matching).
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
        self.counts: dict[tuple[str, str], int] = {}
        self.file = file
        if file is not None and file.is_file():
            table = pd.read_csv(file, dtype={"query": str, "gallery": str})
            self.counts = dict(
                zip(
                    zip(table["query"], table["gallery"], strict=True),
                    table["inliers"].astype(int),
                    strict=True,
                )
            )

    def save(self) -> None:
        """Keep the counts on disk (keyed by the matcher settings in the file name): a re-run
        with other fusion or protocol settings then skips the slow matching."""
        if self.file is not None:
            keys = list(self.counts)
            write_csv(
                pd.DataFrame(
                    {
                        "query": [k[0] for k in keys],
                        "gallery": [k[1] for k in keys],
                        "inliers": list(self.counts.values()),
                    }
                ),
                self.file,
            )

    def matrix(
        self, rows: pd.Series, gallery: pd.Series, candidates: list[np.ndarray]
    ) -> np.ndarray:
        """(rows x gallery) inlier counts, -1 where not matched; `candidates[r]` are the
        gallery columns row r is matched against (pairs not yet cached are matched now)."""
        rows, gallery = rows.to_numpy(), gallery.to_numpy()
        todo = [
            (r, [g for g in cand if (rows[r], gallery[g]) not in self.counts])
            for r, cand in enumerate(candidates)
        ]
        todo = [(r, c) for r, c in todo if c]
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
            for (r, cand), counts in zip(todo, results, strict=True):
                for g, n in zip(cand, counts, strict=True):
                    self.counts[(rows[r], gallery[g])] = int(n)
            self.save()
        out = np.full((len(rows), len(gallery)), -1, dtype=np.float32)
        for r, cand in enumerate(candidates):
            for g in cand:
                out[r, g] = self.counts[(rows[r], gallery[g])]
        return out


def fuse(cos: np.ndarray, counts: np.ndarray, weight: float) -> np.ndarray:
    """cos + weight * log(1 + inliers); unmatched pairs (counts < 0) keep their cosine."""
    return cos + weight * np.log1p(np.maximum(counts, 0))


def choose_weight(
    cal_cos: np.ndarray,
    cal_counts: np.ndarray,
    ids: np.ndarray,
    cal: Calibration,
    keep: np.ndarray | None = None,
    weights: Sequence[float] = FUSION_WEIGHTS,
) -> float:
    """The fusion weight with the best leave-one-sighting-out MAP@5 on known gallery rows
    (those of them in `keep`, a mask over the calibration rows); 0 (no fusion) if none.

    `cal_cos` and `cal_counts` are (calibration rows x gallery), `ids` the gallery's
    individuals; pairs off `cal.mask` (the row's own sighting) are never ranked. Ties go
    to the smaller weight.
    """
    known = np.array([t != NEW_INDIVIDUAL for t in cal.truths], dtype=bool)
    if keep is not None:
        known &= keep
    if not known.any():
        return 0.0
    truths = [t for t, k in zip(cal.truths, known, strict=True) if k]
    best = (-1.0, 0.0)
    for w in weights:
        scores = np.where(cal.mask, fuse(cal_cos, cal_counts, w), -np.inf)[known]
        best = max(best, (closed_scores(rank(scores, ids), truths)["map5"], -w))
    return -best[1]


def fusion_weights(
    cal_cos: np.ndarray,
    cal_counts: np.ndarray,
    ids: np.ndarray,
    cal: Calibration,
    cal_images: pd.Series,
    protocol: Protocol,
    given: float | None,
    closed_queries: Collection[str],
) -> dict[str, float | str]:
    """The trained+sift weight to use ("fusion_weight") and where it comes from.

    A weight chosen on rows the model trained on is chosen on inflated cosines, so the
    closed protocol uses `given` when the open run supplied one, keeping its own choice for
    comparison only. With `closed_queries` (open protocol), the weight for the closed
    protocol is chosen too, on the held-out rows less the closed queries' photos, so no
    closed query's label touches it; the models share their recipe, hence their scale.
    `cal_images` are the calibration rows' images.
    """
    own = choose_weight(cal_cos, cal_counts, ids, cal)
    inflated = trains_on_calibration(protocol)
    out: dict[str, float | str] = {
        "fusion_weight": own,
        "fusion_weight_source": "trained-on calibration (inflated)"
        if inflated
        else "held-out calibration",
    }
    if given is not None:
        out.update(
            fusion_weight=given, fusion_weight_source="open run", fusion_weight_own_calibration=own
        )
    if closed_queries:
        keep = ~cal_images.isin(set(closed_queries)).to_numpy()
        out["fusion_weight_for_closed"] = choose_weight(cal_cos, cal_counts, ids, cal, keep)
    return out
