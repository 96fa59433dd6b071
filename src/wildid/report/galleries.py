"""Match galleries: validation queries the run got right and wrong at rank 1, in photos.

Each row is a query photo (grey frame) followed by the nearest gallery photo of each of
its nearest individuals, in rank order, framed green when it shows the query's animal
and red when not (wildid.evaluation.plots.match_gallery). Rows are the most confident
first (highest top-1 score): wrong ones are then the look-alikes a biologist should
check. `confusions` counts which individuals are mistaken for which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wildid.report.collect import RunFiles
from wildid.report.figures import QuerySet

ROWS = 6  # queries per gallery
MATCHES = 4  # individuals shown per query


@dataclass(frozen=True)
class Match:
    image: str
    individual_id: str
    same: bool  # shows the query's individual


@dataclass(frozen=True)
class GalleryRow:
    query: str
    individual_id: str  # the query's true individual (its own id even when held out)
    truth: str  # what it should be predicted as (new_individual when held out)
    predicted: str  # the run's top-1
    score: float
    matches: list[Match]

    @property
    def caption(self) -> str:
        truth = (
            self.truth
            if self.truth == self.individual_id
            else f"{self.truth} ({self.individual_id})"
        )
        score = "" if pd.isna(self.score) else f", score {self.score:.3f}"
        return f"{self.query}: truth {truth}, predicted {self.predicted}{score}"


def gallery_rows(
    files: RunFiles, validation: QuerySet, right: bool, rows: int = ROWS, matches: int = MATCHES
) -> list[GalleryRow]:
    """Up to `rows` validation queries whose top-1 is right (or wrong), with matches."""
    if files.split is None:
        return []
    identity = files.split.set_index("image")["individual_id"]
    table = validation.queries
    if "nearest" not in table:
        return []
    correct = table["top1"] == table["truth"]
    chosen = table[(correct if right else ~correct) & table["nearest"].map(bool)]
    chosen = chosen.sort_values(["score", "image"], ascending=[False, True], na_position="last")
    out = []
    for row in chosen.head(rows).itertuples():
        own = str(identity.get(row.image, row.truth))
        seen: dict[str, str] = {}
        for image in row.nearest:
            seen.setdefault(str(identity[image]), image)
            if len(seen) >= matches:
                break
        shown = [Match(image, ind, ind == own) for ind, image in seen.items()]
        out.append(GalleryRow(row.image, own, row.truth, row.top1, float(row.score), shown))
    return out


def render_gallery(files: RunFiles, rows: list[GalleryRow], path: str | Path) -> Path | None:
    """The rows as one PNG of framed photos; None when no row's photos can be found."""
    from wildid.evaluation.plots import match_gallery

    grid = []
    for row in rows:
        query = files.photo(row.query)
        shown = [(files.photo(m.image), m.same) for m in row.matches]
        if query is None or any(p is None for p, _ in shown):
            continue
        grid.append((str(query), [(str(p), same) for p, same in shown]))
    if not grid:
        return None
    return match_gallery(grid, path, tile=128, frame=5)


def confusions(validation: QuerySet, top: int = 10) -> pd.DataFrame:
    """The commonest (truth, predicted) pairs among wrong top-1s: truth, predicted, queries."""
    table = validation.queries
    wrong = table[table["top1"] != table["truth"]]
    if wrong.empty:
        return pd.DataFrame(columns=["truth", "predicted", "queries"])
    pairs = wrong.groupby(["truth", "top1"]).size().reset_index(name="queries")
    pairs = pairs.rename(columns={"top1": "predicted"})
    pairs = pairs.sort_values(["queries", "truth", "predicted"], ascending=[False, True, True])
    return pairs.head(top).reset_index(drop=True)
