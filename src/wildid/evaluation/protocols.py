"""Evaluation protocols on a folder-per-individual catalogue: closed set and open set.

Both protocols come from `import_catalogue`, which splits by (individual, sighting) so two
near-duplicate photos of one encounter never sit on both sides:

* closed: every individual with at least two sightings sends about 20% of them to the
  queries, the rest (and every single-sighting individual) form the gallery. Scored by
  top-1 accuracy and MAP@5 over distinct individuals.
* open (competition style): about 20% of individuals are held out whole, so their photos
  are queries whose truth is `new_individual`; the others are split as above. Scored by
  MAP@5 with `new_individual`, and AnimalCLEF's BAKS, BAUS and their geometric mean.

Every method hands in a dense (queries x gallery) score matrix, higher = more alike, and
-inf for pairs it did not compare (a shortlist, or another flank; `query_scores` and
`calibration_scores` make one from feature vectors), scored by `protocol_scores`. The
open-set `new_individual` threshold is tuned without touching the queries: gallery photos
are matched leave-one-sighting-out against the rest of the gallery, where individuals
seen in only that sighting play `new_individual` (`calibration`). A model trained on those
photos would score its own pseudo-queries with inflated similarities and get a threshold
that is off (nyala, before the fix: trained BAUS 0.17 against 0.87 untrained). So a
trained model of the open protocol must not train on the calibration sightings
(`training_exclusion`, from `calibration_images`: every photo of each pseudo-query's
(individual, sighting), near duplicates included); they stay gallery entries, embedded
like the rest. The cost is that training data, about `n` sightings. Pseudo-queries are
new far less often than the open protocol's queries (a fifth against about half on
nyala), so `tune` can weight them to the share of new queries the protocol's design
implies (`expected_new_share`), which is known without any query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wildid.data.catalogue import ImportSpec, import_catalogue
from wildid.data.competition import NEW_INDIVIDUAL
from wildid.evaluation.metrics import baks, baus, map_at_k
from wildid.infer.openset import predict, tune_threshold
from wildid.infer.retrieval import Ranking, best_per_individual

SIDE_REGEX = r"(left|right)"  # nyala: <sighting>_<side>photo.jpg
PROTOCOLS = {"closed": 0.0, "open": 0.2}  # name -> fraction of individuals held out whole
TEST_FRACTION = 0.2  # of each known individual's sightings, sent to the queries


@dataclass(frozen=True)
class Protocol:
    """Gallery and query photos of one protocol; tables hold image, path, individual_id,
    group, side (None when the file name carries none) and, for queries, truth."""

    name: str
    root: Path
    gallery: pd.DataFrame
    queries: pd.DataFrame

    @property
    def truths(self) -> list[str]:
        return self.queries["truth"].tolist()


def _side(source: str, pattern: re.Pattern[str] | None) -> str | None:
    if pattern is None:
        return None
    match = pattern.search(Path(source).name)
    return (match.group(1) if pattern.groups else match.group(0)) if match else None


def load_protocol(root: str | Path, name: str, side_regex: str | None = SIDE_REGEX) -> Protocol:
    """Read an imported catalogue (its catalogue.csv) as a protocol."""
    root = Path(root)
    table = pd.read_csv(root / "catalogue.csv", dtype=str, keep_default_na=False)
    pattern = re.compile(side_regex) if side_regex else None
    table["path"] = [
        str(root / f"{s}_images" / i) for s, i in zip(table["split"], table["image"], strict=True)
    ]
    table["side"] = [_side(s, pattern) for s in table["source"]]
    gallery = table[table["split"] == "train"].reset_index(drop=True)
    queries = table[table["split"] == "test"].reset_index(drop=True)
    known = set(gallery["individual_id"])
    queries["truth"] = [i if i in known else NEW_INDIVIDUAL for i in queries["individual_id"]]
    return Protocol(name, root, gallery, queries)


def import_protocols(
    src: str | Path,
    out: str | Path,
    group: str | None,
    seed: int = 0,
    side_regex: str | None = SIDE_REGEX,
    progress: bool = False,
    follow_links: bool = False,
) -> dict[str, Protocol]:
    """Import the catalogue once per protocol (symlinked images) under OUT/<protocol>;
    `follow_links` reads a catalogue made of symbolic links (a subset of another)."""
    protocols = {}
    for name, new_fraction in PROTOCOLS.items():
        spec = ImportSpec(
            group=group or None,
            new_fraction=new_fraction,
            test_fraction=TEST_FRACTION,
            seed=seed,
            link="symlink",
            follow_links=follow_links,
        )
        import_catalogue(src, Path(out) / name, spec, progress=progress)
        protocols[name] = load_protocol(Path(out) / name, name, side_regex)
    return protocols


# --- masks ----------------------------------------------------------------------------------


def side_mask(query_sides: pd.Series, gallery_sides: pd.Series) -> np.ndarray:
    """True where a pair may be compared: same flank, or either side unknown.

    A nyala's left and right flanks carry different stripes, so a cross-side match is
    evidence of nothing; the side is metadata in the file name, not a label.
    """
    q = query_sides.to_numpy(dtype=object)[:, None]
    g = gallery_sides.to_numpy(dtype=object)[None, :]
    return (q == g) | pd.isna(q) | pd.isna(g)


def flank_classes(split: pd.DataFrame, gallery: pd.DataFrame) -> pd.DataFrame:
    """Train each (individual, flank) as its own class: the two flanks of a nyala carry
    different stripes, so one ArcFace centre for both must average two unrelated patterns.
    Retrieval still scores individuals; photos of unknown flank keep their individual.

    `split` is a training split (image, individual_id, optionally val_truth), `gallery` a
    protocol's gallery (image, side); a copy comes back with `<individual>_<side>` labels
    (`val_truth` too, unless new_individual). It lives with `side_mask` because the flank
    is the protocol's file-name metadata (`load_protocol`), not a matching concept.
    """
    sides = dict(zip(gallery["image"], gallery["side"], strict=True))
    split = split.copy()
    side = split["image"].map(sides)
    flank = side.notna()
    split["individual_id"] = split["individual_id"].where(
        ~flank, split["individual_id"] + "_" + side.astype(str)
    )
    if "val_truth" in split:
        known = flank & (split["val_truth"] != NEW_INDIVIDUAL)
        split["val_truth"] = split["val_truth"].where(~known, split["val_truth"] + "_" + side)
    return split


def cosine(
    features: dict[str, np.ndarray], rows: pd.Series | list[str], gallery: pd.Series | list[str]
) -> np.ndarray:
    """(rows x gallery) dot products of the images' feature vectors (cosine when they are
    L2-normalised, as embeddings are), float32."""
    a = np.stack([features[i] for i in rows])
    b = np.stack([features[i] for i in gallery])
    return (a @ b.T).astype(np.float32)


def query_scores(features: dict[str, np.ndarray], protocol: Protocol) -> np.ndarray:
    """(queries x gallery) cosine of one method's features, -inf across flanks."""
    g, q = protocol.gallery, protocol.queries
    return np.where(
        side_mask(q["side"], g["side"]), cosine(features, q["image"], g["image"]), -np.inf
    )


# --- ranking and scores ---------------------------------------------------------------------


def rank(scores: np.ndarray, gallery_ids: np.ndarray | list[str], k: int = 50) -> Ranking:
    """Per query, individuals by their best gallery photo's score (pairs at -inf skipped)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    similarities = np.take_along_axis(scores, order, axis=1)
    order = np.where(np.isfinite(similarities), order, -1)
    ranking = best_per_individual(similarities, order, np.asarray(gallery_ids))
    return Ranking(ranking.codes[:, :k], ranking.scores[:, :k], ranking.individuals)


def closed_scores(ranking: Ranking, truths: list[str]) -> dict[str, float]:
    predictions = predict(ranking, None)
    top1 = float(np.mean([bool(p) and p[0] == t for p, t in zip(predictions, truths, strict=True)]))
    return {"top1": top1, "map5": map_at_k(predictions, truths)}


def open_scores(ranking: Ranking, truths: list[str], threshold: float | None) -> dict[str, float]:
    predictions = predict(ranking, threshold)
    top1 = [p[0] if p else NEW_INDIVIDUAL for p in predictions]
    known, unknown = baks(top1, truths), baus(top1, truths)
    return {
        "map5": map_at_k(predictions, truths),
        "baks": known,
        "baus": unknown,
        "gmean": float(np.sqrt(known * unknown)),
        "threshold": threshold,
    }


# --- calibration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Gallery photos used as pseudo-queries, leave-one-sighting-out.

    rows: indices into the gallery; truths: the individual, or new_individual when it has
    no other sighting in the gallery; mask: (rows x gallery) False for the photo's own
    sighting (itself and its near duplicates), which must not be matched.
    """

    rows: np.ndarray
    truths: list[str]
    mask: np.ndarray


def calibration(
    gallery: pd.DataFrame, n: int = 300, seed: int = 0, min_new: int = 0, per_new: int = 2
) -> Calibration:
    """`n` seeded gallery photos as leave-one-sighting-out pseudo-queries.

    A photo whose individual has another sighting in the gallery is a known pseudo-query
    (its own sighting masked); one whose individual has none plays `new_individual`. In a
    catalogue without sighting ids (every photo its own group), or one where most
    individuals have several sightings, few pseudo-queries are new, too few to set an
    open-set threshold on. `min_new` tops them up: further individuals (seeded, none of
    the sampled rows' own) are held out whole, up to `per_new` of their photos each
    becoming new pseudo-queries with every photo of their individual masked, until at
    least `min_new` individuals play new; when the sample already shows nearly every
    individual, sampled ones are held out whole instead (their rows turn new). A model
    tuned on the calibration must then not train on any photo of those individuals either
    (`calibration_images` reads it from the mask), just as the open protocol's new
    individuals are never trained on.
    """
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.permutation(len(gallery))[: min(n, len(gallery))])
    ids = gallery["individual_id"].to_numpy()
    groups = gallery["group"].to_numpy()
    sightings = gallery.groupby("individual_id")["group"].nunique()
    truths = [ids[r] if sightings[ids[r]] > 1 else NEW_INDIVIDUAL for r in rows]
    same = (ids[rows][:, None] == ids[None, :]) & (groups[rows][:, None] == groups[None, :])
    mask = ~same
    new_now = {ids[r] for r, t in zip(rows, truths, strict=True) if t == NEW_INDIVIDUAL}
    if len(new_now) >= min_new:
        return Calibration(rows, truths, mask)
    # Individuals to hold out whole: those no sampled row shows first (their photos join
    # as new rows), then sampled ones (their rows turn new), seeded.
    taken = set(ids[rows])
    order = [i for i in sightings.index[rng.permutation(len(sightings))] if i not in new_now]
    order = [i for i in order if i not in taken] + [i for i in order if i in taken]
    extra_rows: list[int] = []
    truths = list(truths)
    for individual in order[: min_new - len(new_now)]:
        if individual in taken:
            for k in np.flatnonzero(ids[rows] == individual):
                truths[k] = NEW_INDIVIDUAL
                mask[k] = ids != individual
        else:
            photos = np.flatnonzero(ids == individual)
            extra_rows += sorted(rng.permutation(photos)[:per_new].tolist())
    extra = np.array(extra_rows, dtype=np.int64)
    whole = ids[extra][:, None] == ids[None, :]
    return Calibration(
        np.concatenate([rows, extra]),
        truths + [NEW_INDIVIDUAL] * len(extra),
        np.concatenate([mask, ~whole]),
    )


def calibration_images(gallery: pd.DataFrame, cal: Calibration) -> list[str]:
    """Images of every gallery photo in a calibration pseudo-query's sighting.

    A model tuned on `cal` must not train on these: a sighting's photos are near
    duplicates, so training on any of them inflates the pseudo-query's similarities as much
    as training on the pseudo-query itself. Read from `cal.mask` (False on own sighting).
    """
    return gallery["image"].to_numpy()[(~cal.mask).any(axis=0)].tolist()


def calibration_scores(
    features: dict[str, np.ndarray], protocol: Protocol, cal: Calibration
) -> np.ndarray:
    """(calibration rows x gallery) cosine of one method's features, -inf across flanks
    and on each pseudo-query's own sighting (`cal.mask`): `query_scores` for `cal`."""
    g = protocol.gallery
    allowed = side_mask(g["side"].iloc[cal.rows], g["side"]) & cal.mask
    return np.where(allowed, cosine(features, g["image"].iloc[cal.rows], g["image"]), -np.inf)


def trains_on_calibration(protocol: Protocol) -> bool:
    """Whether the protocol's trained model trained on its calibration rows (closed only)."""
    return protocol.name == "closed"


def training_exclusion(protocol: Protocol, cal: Calibration) -> list[str]:
    """Gallery photos the protocol's trained model must not train on.

    Open: every photo of the calibration sightings, so the new_individual threshold is
    tuned on similarities the model was not fitted to (trained-on pseudo-queries looked
    far more alike than real new queries and the threshold was badly off). Closed: none;
    it needs no threshold, and its headline top-1 keeps every gallery photo for training.
    """
    return [] if trains_on_calibration(protocol) else calibration_images(protocol.gallery, cal)


def expected_new_share(
    new_fraction: float = PROTOCOLS["open"], test_fraction: float = TEST_FRACTION
) -> float:
    """The share of open-set queries expected to be `new_individual`, from the protocol's
    design alone: held-out individuals send all their photos, the others about
    `test_fraction` of theirs (nyala: 0.2 / (0.2 + 0.8 * 0.2) = 0.56; measured 0.53)."""
    return new_fraction / (new_fraction + (1.0 - new_fraction) * test_fraction)


def share_weights(truths: list[str], new_share: float) -> np.ndarray:
    """Per-query weights giving `new_individual` truths `new_share` of the total weight.

    Leave-one-sighting-out pseudo-queries are new only when their individual has a single
    sighting (a fifth of nyala's), far fewer than in the open protocol's queries; unweighted,
    the tuned threshold calls too few queries new."""
    is_new = np.array([t == NEW_INDIVIDUAL for t in truths], dtype=bool)
    if is_new.all() or not is_new.any():
        return np.ones(len(truths))
    return np.where(is_new, new_share / is_new.mean(), (1.0 - new_share) / (~is_new).mean())


def tune(
    cal_scores: np.ndarray,
    gallery_ids: np.ndarray | list[str],
    cal: Calibration,
    steps: int = 41,
    new_share: float | None = None,
) -> float:
    """The new_individual threshold with the best leave-one-sighting-out MAP@5; with
    `new_share`, the pseudo-queries are weighted to that share of new ones (`share_weights`).

    Methods score on different scales (cosine, inlier counts), so the grid is the
    quantiles of the calibration queries' best scores.
    """
    ranking = rank(np.where(cal.mask, cal_scores, -np.inf), gallery_ids)
    best = (
        ranking.scores[:, 0][np.isfinite(ranking.scores[:, 0])]
        if ranking.scores.size
        else np.zeros(0)
    )
    if len(best) == 0:
        return float("inf")
    grid = sorted({float(v) for v in np.quantile(best, np.linspace(0, 1, steps))})
    grid.append(grid[-1] + 1e-6)  # above every score: predict new_individual first always
    weights = None if new_share is None else share_weights(cal.truths, new_share)
    threshold, _ = tune_threshold(ranking, cal.truths, grid, weights)
    return threshold


# --- one method on one protocol ---------------------------------------------------------------


def protocol_scores(
    protocol: Protocol,
    ranking: Ranking,
    cal_scores: np.ndarray,
    ids: np.ndarray | list[str],
    cal: Calibration,
    new_share: float | None,
) -> dict[str, float]:
    """A method's figures on the protocol: closed, `closed_scores` of `ranking`; open,
    `open_scores` with the new_individual threshold `tune`d on `cal_scores` (calibration
    rows x the columns `ids` names, which may be gallery photos or pooled individuals)."""
    if protocol.name == "closed":
        return closed_scores(ranking, protocol.truths)
    return open_scores(ranking, protocol.truths, tune(cal_scores, ids, cal, new_share=new_share))
