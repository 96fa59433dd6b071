"""The report's numbers, from the files `wildid.report.collect` read.

Two query sets are scored, each overall and per species:

* validation: the run's validation queries (val_predictions.csv: the predictions the
  tuned threshold gives, the ones behind metrics.json's val_map5), against the split's
  training part; held-out individuals have truth `new_individual`;
* test: the submission against solution.csv, when the competition has one (synthetic or
  imported data).

Per set: Kaggle's MAP@5 and the top-1 / top-5 accuracy of the submitted lists
(`new_individual` included, so open-set), the image-level retrieval scores of
`wildid.evaluation.neighbours` (precision@1/3/5/10, mAP, recall@1/5/10: closed set, over
queries of known individuals, from the stored embeddings), and AnimalCLEF's BAKS, BAUS and
their geometric mean on the top-1 predictions. Embedding quality: AMI and NMI of a k-means
clustering of the validation queries' embeddings against their true individuals (held-out
ones included), `wildid.evaluation.clustering`.

For k-fold runs the image-level scores and the clustering use fold 0 (the embeddings
stored in embeddings/fold0 and its split); test rankings used all folds' embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.evaluation.clustering import ClusterScores, clustering_scores
from wildid.evaluation.metrics import average_precision_at_k, baks, baks_baus_gmean, baus
from wildid.evaluation.neighbours import PRECISION_KS, RECALL_KS, mean, score_neighbours
from wildid.report.collect import RunFiles

# figure key -> (label, what it measures); the order of every table
FIGURES: dict[str, tuple[str, str]] = {
    "map5": ("MAP@5", "Kaggle's score of the top-5 lists, new_individual included"),
    "top1": ("top-1", "first prediction right (new_individual included)"),
    "top5": ("top-5", "truth among the 5 predictions"),
    **{
        f"precision@{k}": (
            f"precision@{k}",
            f"share of the {k} nearest gallery photos that show the query's animal "
            "(queries of known individuals)",
        )
        for k in PRECISION_KS
    },
    "map": (
        "mAP",
        "mean average precision over the whole ranked gallery of photos (known individuals)",
    ),
    **{
        f"recall@{k}": (
            f"recall@{k}",
            f"a photo of the query's animal among the {k} nearest (known individuals)",
        )
        for k in RECALL_KS
    },
    "baks": ("BAKS", "balanced accuracy on known individuals (AnimalCLEF)"),
    "baus": ("BAUS", "balanced accuracy on new individuals (AnimalCLEF)"),
    "baks_baus_gmean": ("√(BAKS·BAUS)", "AnimalCLEF 2025's score"),
}
IDENTIFICATION = ("map5", "top1", "top5", *(f"precision@{k}" for k in PRECISION_KS), "map")
IDENTIFICATION += tuple(f"recall@{k}" for k in RECALL_KS)
OPEN_SET = ("baks", "baus", "baks_baus_gmean")
COUNTS = ("queries", "known_queries", "new_queries")


@dataclass(frozen=True)
class QuerySet:
    """One scored set of queries: per-query rows, overall figures, figures per species."""

    name: str  # validation, test
    queries: pd.DataFrame = field(repr=False)  # one row per query (see `query_table`)
    overall: dict[str, float]
    per_species: pd.DataFrame = field(repr=False)  # species, counts, figures; last row "all"
    note: str = ""


@dataclass(frozen=True)
class RunFigures:
    run: str
    threshold: float | None
    threshold_source: str | None
    threshold_curve: list[tuple[float, float]]
    sets: dict[str, QuerySet]
    embedding: ClusterScores | None
    histories: dict[int, pd.DataFrame] = field(repr=False)
    notes: list[str] = field(default_factory=list)

    def scalars(self) -> dict[str, float | None]:
        """Every number as `<set>.<figure>` etc., the rows `wildid compare` lines up."""
        out: dict[str, float | None] = {"threshold": self.threshold}
        for name, qs in self.sets.items():
            for key in (*COUNTS, *FIGURES):
                out[f"{name}.{key}"] = qs.overall.get(key)
        if self.embedding is not None:
            out["embedding.ami"] = self.embedding.ami
            out["embedding.nmi"] = self.embedding.nmi
        if self.histories:
            last = [h.iloc[-1] for h in self.histories.values()]
            out["training.epochs"] = float(
                max(int(h["epoch"].max()) for h in self.histories.values())
            )
            out["training.final_loss"] = float(np.mean([row["loss"] for row in last]))
            best = [h["val_map5"].max() for h in self.histories.values() if "val_map5" in h]
            out["training.best_val_map5"] = float(np.mean(best)) if best else None
        return {k: (None if v is None or _nan(v) else float(v)) for k, v in out.items()}


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def figures_frame(figures: RunFigures) -> pd.DataFrame:
    """The overall figures as a table: one row per figure (its label), one column per set."""
    keys = (*COUNTS, *FIGURES)
    labels = [FIGURES[k][0] if k in FIGURES else k.replace("_", " ") for k in keys]
    return pd.DataFrame(
        {name: [qs.overall.get(k) for k in keys] for name, qs in figures.sets.items()},
        index=pd.Index(labels, name="figure"),
    )


# --------------------------------------------------------------------------- per query


def query_table(
    images: Sequence[str],
    truths: Sequence[str],
    predictions: Sequence[Sequence[str]],
    species: Sequence[str],
    scores: Sequence[float] | None = None,
) -> pd.DataFrame:
    """One row per query: its truth, predictions and individual-level scores.

    Columns: image, species, truth, predictions (space-joined), top1 (the first label),
    score (its similarity, NaN if unknown), known (truth is not new_individual), map5
    (the query's AP@5), hit1, hit5.
    """
    predictions = [list(p) for p in predictions]
    truths = list(truths)
    return pd.DataFrame(
        {
            "image": list(images),
            "species": list(species),
            "truth": truths,
            "predictions": [" ".join(p) for p in predictions],
            "top1": [p[0] if p else "" for p in predictions],
            "score": np.nan if scores is None else np.asarray(scores, dtype=float),
            "known": [t != NEW_INDIVIDUAL for t in truths],
            "map5": [
                average_precision_at_k(p, t) for p, t in zip(predictions, truths, strict=True)
            ],
            "hit1": [float(t in p[:1]) for p, t in zip(predictions, truths, strict=True)],
            "hit5": [float(t in p[:5]) for p, t in zip(predictions, truths, strict=True)],
        }
    )


def add_neighbour_scores(
    table: pd.DataFrame,
    rows: np.ndarray,
    queries: np.ndarray,
    gallery: np.ndarray,
    gallery_images: Sequence[str],
    gallery_labels: Sequence[str],
) -> pd.DataFrame:
    """`table` with precision@k, ap, recall@k and the nearest gallery images (`nearest`)
    for its `rows` (positions in `table`) whose embeddings are `queries`; NaN elsewhere."""
    table = table.copy()
    for key in (
        [f"precision@{k}" for k in PRECISION_KS] + ["ap"] + [f"recall@{k}" for k in RECALL_KS]
    ):
        table[key] = np.nan
    table["nearest"] = [[] for _ in range(len(table))]
    if len(rows) == 0 or len(gallery) == 0:
        return table
    scores = score_neighbours(
        queries, table["truth"].to_numpy()[rows], gallery, list(gallery_labels)
    )
    index = table.index[rows]
    for k, values in scores.precision.items():
        table.loc[index, f"precision@{k}"] = values
    for k, values in scores.recall.items():
        table.loc[index, f"recall@{k}"] = values
    table.loc[index, "ap"] = scores.average_precision
    names = np.asarray(gallery_images, dtype=object)
    nearest = table["nearest"].tolist()
    for position, row in zip(rows, scores.nearest, strict=True):
        nearest[position] = names[row].tolist()
    table["nearest"] = nearest
    return table


def summarise(table: pd.DataFrame) -> dict[str, float]:
    """The figures of a set of queries (rows of `query_table`, maybe with neighbours)."""
    known = table["known"].to_numpy(dtype=bool)
    out: dict[str, float] = {
        "queries": float(len(table)),
        "known_queries": float(known.sum()),
        "new_queries": float((~known).sum()),
        "map5": mean(table["map5"]),
        "top1": mean(table["hit1"]),
        "top5": mean(table["hit5"]),
    }
    for k in PRECISION_KS:
        out[f"precision@{k}"] = mean(table.get(f"precision@{k}", np.full(len(table), np.nan)))
    out["map"] = mean(table.get("ap", np.full(len(table), np.nan)))
    for k in RECALL_KS:
        out[f"recall@{k}"] = mean(table.get(f"recall@{k}", np.full(len(table), np.nan)))
    top1, truths = table["top1"].tolist(), table["truth"].tolist()
    out["baks"] = baks(top1, truths) if len(table) else float("nan")
    out["baus"] = baus(top1, truths) if len(table) else float("nan")
    out["baks_baus_gmean"] = baks_baus_gmean(top1, truths) if len(table) else float("nan")
    return out


def per_species(table: pd.DataFrame) -> pd.DataFrame:
    """`summarise` per species (sorted by name), then an "all" row."""
    rows = [{"species": name, **summarise(group)} for name, group in table.groupby("species")]
    rows.append({"species": "all", **summarise(table)})
    return pd.DataFrame(rows)


def _set(name: str, table: pd.DataFrame, note: str) -> QuerySet:
    return QuerySet(name, table, summarise(table), per_species(table), note)


# --------------------------------------------------------------------------- the sets


def _positions(images: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    lookup = {image: i for i, image in enumerate(images)}
    return np.array([lookup[w] for w in wanted], dtype=np.int64)


def validation_set(files: RunFiles) -> QuerySet | None:
    vp, split = files.val_predictions, files.split
    if vp is None or split is None or vp.empty:
        return None
    info = split.set_index("image")
    table = query_table(
        vp["image"],
        vp["truth"],
        [p.split() for p in vp["predictions"]],
        info.loc[vp["image"], "species"].tolist() if "species" in info else ["?"] * len(vp),
        pd.to_numeric(vp["score"], errors="coerce"),
    )
    new = int((~table["known"]).sum())
    note = (
        f"{len(table)} validation queries, {new} of them of individuals held out of training "
        "(truth new_individual)"
    )
    emb = files.embeddings
    if emb is None:
        return _set("validation", table, note)
    fold0_val = set(split.loc[split["role"] == "val", "image"])
    stored = set(emb.train_images)
    rows = np.flatnonzero(table["image"].isin(fold0_val & stored).to_numpy())
    gallery = split.loc[(split["role"] == "train") & split["image"].isin(stored)]
    table = add_neighbour_scores(
        table,
        rows,
        emb.train[_positions(emb.train_images, table["image"].iloc[rows])],
        emb.train[_positions(emb.train_images, gallery["image"])],
        gallery["image"].tolist(),
        gallery["individual_id"].tolist(),
    )
    if len(rows) < len(table):
        note += f"; image-level scores on fold 0's {len(rows)}"
    return _set("validation", table, note)


def test_set(files: RunFiles) -> QuerySet | None:
    comp, sub = files.competition, files.submission
    if comp is None or sub is None or not comp.has_solution:
        return None
    test = comp.test.merge(sub, on="image", how="inner")
    if test.empty:
        return None
    table = query_table(
        test["image"],
        test["individual_id"],
        [p.split() for p in test["predictions"]],
        test["species"],
    )
    note = f"{len(table)} test photos scored against solution.csv"
    emb = files.embeddings
    if emb is None:
        return _set("test", table, note)
    known = table["image"].isin(set(emb.test_images)).to_numpy()
    rows = np.flatnonzero(known)
    labels = (files.split if files.split is not None else comp.train).set_index("image")
    gallery_images = [i for i in emb.train_images if i in labels.index]
    table = add_neighbour_scores(
        table,
        rows,
        emb.test[_positions(emb.test_images, table["image"].iloc[rows])],
        emb.train[_positions(emb.train_images, gallery_images)],
        gallery_images,
        labels.loc[gallery_images, "individual_id"].tolist(),
    )
    if files.folds > 1:
        note += "; image-level scores from fold 0's embeddings"
    return _set("test", table, note)


def embedding_quality(files: RunFiles) -> ClusterScores | None:
    """AMI/NMI of the validation queries' embeddings (fold 0) against their individuals."""
    emb, split = files.embeddings, files.split
    if emb is None or split is None:
        return None
    val = split[(split["role"] == "val") & split["image"].isin(set(emb.train_images))]
    if val["individual_id"].nunique() < 2:
        return None
    seed = files.config.train.seed if files.config is not None else 0
    rows = _positions(emb.train_images, val["image"])
    return clustering_scores(emb.train[rows], val["individual_id"].tolist(), seed)


def run_figures(files: RunFiles) -> RunFigures:
    """Every number of the report (see the module docstring)."""
    sets = {s.name: s for s in (validation_set(files), test_set(files)) if s is not None}
    metrics = files.metrics
    curve = [(float(t), float(m)) for t, m in metrics.get("threshold_curve", [])]
    notes = list(files.notes)
    if files.val_predictions is not None and "validation" not in sets:
        notes.append("no validation queries: the validation figures are left out.")
    return RunFigures(
        run=files.name,
        threshold=metrics.get("threshold"),
        threshold_source=metrics.get("threshold_source"),
        threshold_curve=curve,
        sets=sets,
        embedding=embedding_quality(files),
        histories=files.histories,
        notes=notes,
    )
