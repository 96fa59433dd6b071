"""Identify new photos against a package's gallery: ranked individuals, never a decision.

For each photo, the top-k individuals by their best-matching gallery photo's cosine
similarity (as the pipeline ranks), with the calibrated probability that each is the
animal (gallery.calibration) and `new_individual` when the best candidate's probability
is below the package's operating point (`operating_point`: "gmean", the default, the
threshold that best balances recognising known animals against calling new ones new on
the package's calibration queries, or "map5", the MAP@5-optimal one). Packages built
before operating points were stored decide on the run's tuned cosine threshold (or, for a
run without one, on a probability under 0.5). With `sighting=True` all photos of the call
are one encounter: each photo's best score per individual is averaged over the photos
(`matching.sightings.pool_by_sighting`), and every photo gets that pooled ranking (its
own crop and best-matching photos). The probability of a pooled score uses the same
calibration (an approximation: pooled scores of one animal are a little lower than
single-photo best scores).

Flanks: when a photo's side (left or right flank) is known and so is a gallery photo's,
only same-side pairs are compared, as the nyala benchmark does (`evaluation.protocols.
side_mask`): the two flanks of a striped animal carry different patterns, so a
cross-side similarity is evidence of nothing. Gallery sides are the catalogue's records
(photos.csv `side`, or the side given at enrollment); a query's side is given (`sides`,
`wildid identify --side`) or read from its file name with the package's `side_regex`
(the one its gallery's sides were read with). Unknown on either side: compared.
Individuals with no comparable photo are not candidates.

Keypoints: a package built with local matching (`wildid package --local`; `gallery.fusion`)
ranks by the calibrated fusion of the cosine and RootSIFT keypoints on the animal, as the
nyala benchmark's trained+local method does: each photo's top `shortlist` gallery photos
by cosine are matched by keypoints, and each candidate's probability is the fused
P(same individual) of its best such photo (its `score` stays that photo's cosine, its
`local` the keypoint score); `new_individual` uses the operating points fitted on the
fused probability. `Identifier(..., local=False)` (`wildid identify --no-local`) ranks by
the cosine alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from wildid.gallery.embedder import PhotoEmbedder
from wildid.gallery.fusion import (
    ENROLLED_KEYPOINTS,
    KEYPOINTS,
    crop_features,
    load_fusion,
    read_features,
)
from wildid.gallery.package import (
    DEFAULT_POINT,
    Package,
    PackageError,
    resolve_package,
    side_of,
)
from wildid.gallery.store import Catalogue, Gallery
from wildid.infer.openset import OPERATING_POINTS
from wildid.io import atomic_path, write_csv, write_text
from wildid.matching.base import pool_per_owner
from wildid.matching.local import Features, match_row
from wildid.matching.sightings import pool_by_sighting

RESULT_COLUMNS = ["query", "rank", "individual_id", "score", "probability"]
LOCAL_COLUMN = "local"  # the keypoint score, in the table of a package with keypoints


@dataclass(frozen=True)
class Candidate:
    rank: int  # 1-based
    individual_id: str
    score: float
    probability: float
    photo: Path  # that individual's best-matching gallery thumbnail
    local: float | None = None  # that photo's keypoint score (packages with keypoints)


@dataclass(frozen=True)
class QueryResult:
    query: str
    crop: np.ndarray  # RGB uint8, the crop the model saw
    candidates: list[Candidate]
    new_individual: bool


@dataclass(frozen=True)
class _Index:
    """The gallery with rows grouped by individual, for one max-reduction per query."""

    gallery: Gallery
    vectors: np.ndarray  # rows sorted by individual
    photos: np.ndarray
    individuals: np.ndarray  # (n,) sorted
    starts: np.ndarray  # (n,) first row of each individual
    stops: np.ndarray
    codes: np.ndarray  # (rows,) each row's individual (an index into individuals)
    sides: np.ndarray  # (rows,) object: each row's flank, None when unknown
    known: np.ndarray  # (rows,) bool: the row's flank is known

    def mask(self, side: str | None) -> np.ndarray | None:
        """Rows a photo of flank `side` must not be compared with (None: no such row)."""
        if side is None or not self.known.any():
            return None
        other = self.known & (self.sides != side)
        return other if other.any() else None


def _index(gallery: Gallery, sides: dict[int, str | None]) -> _Index:
    individuals, codes = np.unique(gallery.labels.astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    stops = np.r_[starts[1:], len(order)]
    row_sides = np.array([sides.get(int(p)) or None for p in gallery.photos[order]], dtype=object)
    return _Index(
        gallery,
        np.ascontiguousarray(gallery.vectors[order]),
        gallery.photos[order],
        individuals.astype(object),
        starts,
        stops,
        sorted_codes,
        row_sides,
        np.array([s is not None for s in row_sides], dtype=bool),
    )


class Identifier:
    """Loads a package's model once; identifies photos against its (growing) gallery.

    The gallery is re-read when the catalogue changed since the last call (an enroll or
    undo by this or another process), so a long-lived Identifier (the app) stays current.
    """

    def __init__(
        self,
        package: Package | str | Path,
        operating_point: str | None = None,
        local: bool | None = None,
    ) -> None:
        self.package = resolve_package(package)
        self.embedder = PhotoEmbedder(self.package)
        self.catalogue = Catalogue(self.package, embedder=self.embedder)
        self.calibration = self.package.calibration
        self.threshold = self.package.threshold
        self.probability_threshold = self.package.probability_threshold(operating_point)
        self.float16 = self.package.config.embed.dtype == "float16"
        self.side_regex: str | None = self.package.meta.get("side_regex")
        self._index: _Index | None = None
        # keypoint fusion: on when the package has it, unless `local=False`
        self.fusion = load_fusion(self.package.root) if local is not False else None
        if local and self.fusion is None:
            raise PackageError(
                f"{self.package.root}: this package has no keypoints; build it with "
                "`wildid package --local` to identify with local matching."
            )
        if self.fusion is not None and self.fusion.operating_points:
            point = operating_point or self.package.meta.get("operating_point") or DEFAULT_POINT
            if point not in OPERATING_POINTS:
                raise PackageError(
                    f"operating point {point!r}: expected one of {', '.join(OPERATING_POINTS)}."
                )
            self.probability_threshold = float(self.fusion.operating_points[point])
        self._keypoints: dict[int, Features] = {}
        self._keypoint_files: dict[int, Path] = {}

    def index(self) -> _Index:
        if self._index is None or self._index.gallery.version != self.catalogue.version():
            gallery = self.catalogue.gallery()
            sides = {r.id: r.side for r in self.catalogue.records()}
            self._index = _index(gallery, sides)
        return self._index

    def keypoints(self, photo: int) -> Features:
        """A gallery photo's keypoints (read once): the package's, or an enrolled photo's;
        none for a photo enrolled without (by a package built before keypoints)."""
        if photo not in self._keypoints:
            if not self._keypoint_files or photo not in self._keypoint_files:
                self._keypoint_files = {
                    r.id: self.package.root
                    / (
                        f"{KEYPOINTS}/{r.id}.npz"
                        if r.entry is None
                        else f"{ENROLLED_KEYPOINTS}/{r.sha256}.npz"
                    )
                    for r in self.catalogue.records()
                }
            path = self._keypoint_files.get(photo)
            self._keypoints[photo] = (
                read_features(path) if path is not None and path.is_file() else Features.empty()
            )
        return self._keypoints[photo]

    def _fused(
        self, index: _Index, sims: np.ndarray, crops: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(photos, individuals) best fused probability over each photo's shortlist, and
        per pair the gallery row it came from (-1: none) and that row's keypoint score."""
        fusion = self.fusion
        assert fusion is not None
        n = len(index.individuals)
        best = np.full((len(sims), n), -np.inf, dtype=np.float32)
        rows_of = np.full((len(sims), n), -1, dtype=np.int64)
        local_of = np.zeros((len(sims), n), dtype=np.float32)
        for q in range(len(sims)):
            order = np.argsort(-sims[q], kind="stable")
            order = order[np.isfinite(sims[q, order])]
            _, first = np.unique(index.photos[order], return_index=True)  # best row per photo
            rows = order[np.sort(first)[: fusion.shortlist]]
            if len(rows) == 0:
                continue
            query = crop_features(cv2.cvtColor(crops[q], cv2.COLOR_RGB2BGR), fusion.local)
            gallery = [self.keypoints(int(index.photos[r])) for r in rows]
            local = match_row(query, gallery, np.arange(len(rows)), fusion.local)
            # "sum": an individual's evidence over its photos (as fitted)
            local = pool_per_owner(local[None], index.codes[rows][None], fusion.pool)[0]
            fused = fusion.fused(sims[q, rows], local)
            order = np.argsort(-fused, kind="stable")  # best first (ties: shortlist order)
            _, first = np.unique(index.codes[rows[order]], return_index=True)
            pick = order[first]  # each individual's best row
            codes = index.codes[rows[pick]]
            best[q, codes] = fused[pick]
            rows_of[q, codes] = rows[pick]
            local_of[q, codes] = local[pick]
        return best, rows_of, local_of

    def sides(
        self, photos: Sequence[str | Path], sides: str | Sequence[str | None] | None = None
    ) -> list[str | None]:
        """Each photo's flank: the one given (one for all, or one per photo), else read
        from its file name with the package's `side_regex`; None when unknown."""
        if isinstance(sides, str):
            given: list[str | None] = [sides] * len(photos)
        elif sides is None:
            given = [None] * len(photos)
        else:
            given = list(sides)
            if len(given) != len(photos):
                raise ValueError(f"{len(given)} sides for {len(photos)} photos.")
        return [g or side_of(p, self.side_regex) for g, p in zip(given, photos, strict=True)]

    def identify(
        self,
        photos: Sequence[str | Path],
        sighting: bool = False,
        k: int = 5,
        sides: str | Sequence[str | None] | None = None,
    ) -> list[QueryResult]:
        """Top-k individuals per photo; with `sighting`, the photos vote together. Only
        same-flank gallery photos are compared where both flanks are known (`sides`)."""
        if not photos:
            return []
        embedded = self.embedder.embed(photos)
        queries = embedded.vectors
        if self.float16:  # as the pipeline stores its queries, so scores match its own
            queries = queries.astype(np.float16).astype(np.float32)
        index = self.index()
        sims = queries @ index.vectors.T  # (photos, rows)
        for q, side in enumerate(self.sides(photos, sides)):
            other = index.mask(side)
            if other is not None:
                sims[q, other] = -np.inf
        if self.fusion is not None:
            best, rows_of, local_of = self._fused(index, sims, embedded.crops)
            # fused ties (flat calibrations give equal probabilities) go to the better
            # cosine, then the better keypoint score
            cosine = np.take_along_axis(sims, np.maximum(rows_of, 0), axis=1)
            ties = [np.where(rows_of >= 0, cosine, -np.inf), local_of]
        else:
            best = np.maximum.reduceat(sims, index.starts, axis=1)  # (photos, individuals)
            ties = []
        if sighting and len(photos) > 1:
            columns = np.arange(len(index.individuals))
            best, _ = pool_by_sighting(best, columns, np.zeros(len(photos), dtype=int))
            ties = [np.broadcast_to(t.max(axis=0), t.shape) for t in ties]
        results = []
        k = max(1, min(k, len(index.individuals)))
        for q, path in enumerate(photos):
            top = ranked(best[q], *[t[q] for t in ties], k=k)
            top = top[np.isfinite(best[q, top])]  # individuals it saw no photo of: none
            if self.fusion is not None:  # already P(same), fused
                probabilities = best[q, top]
            else:
                probabilities = self.calibration.probability(best[q, top])
            candidates = []
            for rank, (code, probability) in enumerate(zip(top, probabilities, strict=True)):
                start, stop = index.starts[code], index.stops[code]
                row = start + int(np.argmax(sims[q, start:stop]))
                local = None
                if self.fusion is not None and rows_of[q, code] >= 0:
                    row, local = int(rows_of[q, code]), float(local_of[q, code])
                photo = int(index.photos[row])
                candidates.append(
                    Candidate(
                        rank + 1,
                        str(index.individuals[code]),
                        float(sims[q, row]) if self.fusion is not None else float(best[q, code]),
                        float(probability),
                        index.gallery.thumbnails[photo],
                        local,
                    )
                )
            if not candidates:  # no gallery photo of its flank
                new = True
            elif self.probability_threshold is not None:
                new = candidates[0].probability < self.probability_threshold
            elif self.threshold is not None:
                new = candidates[0].score < self.threshold
            else:
                new = candidates[0].probability < 0.5
            results.append(QueryResult(str(path), embedded.crops[q], candidates, bool(new)))
        return results


def ranked(scores: np.ndarray, *ties: np.ndarray, k: int) -> np.ndarray:
    """The indices of the `k` highest `scores`, best first; equal scores go to the higher
    of each of `ties` in turn (same length as `scores`), then to the lower index."""
    keys = [np.arange(len(scores)), *[-t for t in reversed(ties)], -scores]
    return np.lexsort(keys)[:k]


def results_table(results: Sequence[QueryResult]) -> pd.DataFrame:
    """One row per query and rank: query, rank, individual_id, score, probability (and
    the keypoint score, `local`, when the package ranks with keypoints)."""
    rows = [
        (r.query, c.rank, c.individual_id, round(c.score, 6), round(c.probability, 6), c.local)
        for r in results
        for c in r.candidates
    ]
    table = pd.DataFrame(rows, columns=[*RESULT_COLUMNS, LOCAL_COLUMN])
    if table[LOCAL_COLUMN].isna().all():
        return table.drop(columns=LOCAL_COLUMN)
    return table.round({LOCAL_COLUMN: 4})


def write_results(results: Sequence[QueryResult], path: str | Path) -> Path:
    """`results_table` as CSV, or JSON (a list of row objects) when `path` ends in .json."""
    table = results_table(results)
    path = Path(path)
    if path.suffix.lower() == ".json":
        return write_text(path, json.dumps(table.to_dict(orient="records"), indent=2))
    return write_csv(table, path)


TILE = 224  # px: height of each picture on a match sheet


def _tile(rgb: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    scale = TILE / rgb.shape[0]
    width = max(TILE // 2, round(rgb.shape[1] * scale))
    width = min(width, 2 * TILE)
    picture = cv2.resize(rgb, (width, TILE), interpolation=cv2.INTER_AREA)
    band = np.full((22 * len(lines) + 8, max(width, 200), 3), 255, np.uint8)
    for i, text in enumerate(lines):
        text = text.encode("ascii", "replace").decode()
        cv2.putText(
            band, text, (4, 20 + 22 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
    canvas = np.full((TILE + len(band), band.shape[1], 3), 255, np.uint8)
    canvas[:TILE, :width] = picture
    canvas[TILE:] = band
    return canvas


def match_sheet(result: QueryResult, path: str | Path) -> Path:
    """A PNG: the query crop beside each candidate's best-matching photo, score, probability."""
    verdict = "new individual?" if result.new_individual else "known individual?"
    tiles = [_tile(result.crop, [Path(result.query).name[:28], verdict])]
    for c in result.candidates:
        image = cv2.imread(str(c.photo), cv2.IMREAD_COLOR)
        rgb = (
            cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            if image is not None
            else np.full((TILE, TILE, 3), 200, np.uint8)
        )
        tiles.append(
            _tile(
                rgb,
                [
                    f"#{c.rank} {c.individual_id}"[:28],
                    f"score {c.score:.3f}"
                    + ("" if c.local is None else f"  keypoints {c.local:.1f}"),
                    f"p(same) {c.probability:.2f}",
                ],
            )
        )
    height = max(t.shape[0] for t in tiles)
    gap = np.full((height, 8, 3), 255, np.uint8)
    parts = []
    for tile in tiles:
        padded = np.full((height, tile.shape[1], 3), 255, np.uint8)
        padded[: tile.shape[0]] = tile
        parts += [padded, gap]
    sheet = np.hstack(parts[:-1])
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: cannot write the match sheet.")
    return path
