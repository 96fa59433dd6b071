"""Evaluation: tune the new_individual threshold on validation, predict test, write, score.

`evaluate` ranks a run's validation queries against the split's training part and test
against all of train; `evaluate_folds` does it out of fold for k-fold runs;
`evaluate_rankings` takes rankings made elsewhere (ensembles). Outputs go to the paths
the caller gives (from `wildid.layout.RunLayout`): metrics.json (with the threshold
curve), breakdown.csv, threshold.png and val_predictions.csv (each validation query's
truth, top-5 and top-1 score: what `wildid report` scores) in `out_dir`, the validated
submission at `submission`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wildid.config import Config
from wildid.data.competition import Competition
from wildid.data.folds import fold_split, read_folds
from wildid.evaluation.metrics import score_breakdown
from wildid.evaluation.plots import plot_threshold_curve
from wildid.evaluation.submission import validate_against_competition, write_submission
from wildid.infer.embed import Embeddings, concat, load_class_centres
from wildid.infer.openset import Threshold, choose_threshold, map5_curve, predict, predicted_species
from wildid.infer.retrieval import (
    ClassCentres,
    Ranking,
    blend_with_head,
    rank_individuals,
    search_options,
    stack_rankings,
)
from wildid.io import write_csv, write_text
from wildid.layout import RunLayout
from wildid.train.checkpoints import model_checkpoint


@dataclass(frozen=True)
class Evaluation:
    name: str
    threshold: float | None
    val_map5: float
    curve: list[tuple[float, float]]
    submission: Path
    test_map5: float | None = None
    breakdown: pd.DataFrame | None = field(default=None, repr=False)
    details: dict[str, Any] = field(default_factory=dict, repr=False)  # what metrics.json holds


def _fillers(competition: Competition) -> list[str]:
    counts = competition.train.groupby("individual_id").size()
    return list(counts.sort_values(ascending=False, kind="stable").index[:5])


def evaluate(
    name: str,
    config: Config,
    competition: Competition,
    split: pd.DataFrame,
    embeddings: Embeddings,
    centres: ClassCentres | None | str = "auto",
    pseudo_labels: bool = False,
) -> Evaluation:
    """Tune the new_individual threshold on validation, predict test, write and score.

    Outputs land where the run layout puts method `name` (the run folder for "trained").
    `centres` (the ArcFace head, blended in when retrieval.head_weight > 0): "auto" loads
    them from this run's fold0 checkpoint when their size matches the embeddings.
    `pseudo_labels`: also write the pseudo-labelled round when pseudo.threshold is set.
    """
    if isinstance(centres, str):
        centres = _run_centres(config, embeddings) if config.retrieval.head_weight > 0 else None
    val_ranking, truths, test_ranking = rank_val_test(
        config, competition, split, embeddings, centres
    )
    layout = RunLayout.of(config)
    return evaluate_rankings(
        name,
        config,
        competition,
        val_ranking,
        truths,
        test_ranking,
        layout.method(name),
        layout.submission(name),
        pseudo_labels=pseudo_labels,
        val_images=val_images(competition, split),
    )


def val_images(competition: Competition, split: pd.DataFrame) -> list[str]:
    """A split's validation queries in the order `rank_val_test` ranks them."""
    images = competition.train["image"].to_numpy()
    return images[_roles(competition, split) == "val"].tolist()


def _roles(competition: Competition, split: pd.DataFrame) -> np.ndarray:
    """Each train image's role in `split` (train or val), in competition.train order."""
    return split.set_index("image").loc[competition.train["image"], "role"].to_numpy()


def rank_val_test(
    config: Config,
    competition: Competition,
    split: pd.DataFrame,
    embeddings: Embeddings,
    centres: ClassCentres | None = None,
) -> tuple[Ranking, list[str], Ranking]:
    """Validation queries ranked against the split's train part, and test against all train.

    Gallery rows follow `embeddings.train_source`, so flip "gallery" mirrors join the
    gallery of their own image's role (a held-out individual's mirror never leaks in).
    """
    rc = config.retrieval
    val_ranking, truths, val = _rank_val(config, competition, split, embeddings)
    labels = competition.train["individual_id"].to_numpy()[embeddings.gallery_source()]
    test_ranking = rank_individuals(
        embeddings.train, labels, embeddings.test, rc.k, **search_options(rc)
    )
    if centres is not None:
        val_ranking = blend_with_head(val_ranking, embeddings.train[val], centres, rc.head_weight)
        test_ranking = blend_with_head(test_ranking, embeddings.test, centres, rc.head_weight)
    return val_ranking, truths, test_ranking


def _run_centres(config: Config, embeddings: Embeddings) -> ClassCentres | None:
    checkpoint = model_checkpoint(config, 0)
    if not checkpoint.is_file():
        return None
    centres = load_class_centres(checkpoint)
    if centres.weights.shape[1] != embeddings.train.shape[1]:
        print(
            f"retrieval.head_weight ignored: head of {checkpoint} is "
            f"{centres.weights.shape[1]}-d, embeddings are {embeddings.train.shape[1]}-d."
        )
        return None
    return centres


def evaluate_rankings(
    name: str,
    config: Config,
    competition: Competition,
    val_ranking: Ranking,
    truths: list[str],
    test_ranking: Ranking,
    out_dir: Path,
    submission: Path,
    threshold: Threshold | None = None,
    extra: dict[str, Any] | None = None,
    pseudo_labels: bool = False,
    val_images: Sequence[str] | None = None,
) -> Evaluation:
    """Choose the threshold (unless given), predict test, write, validate and score.

    `extra` is recorded in metrics.json beside the scores (e.g. an ensemble's members).
    `val_images` (the validation queries, in ranking order): also write each one's
    predictions to val_predictions.csv in `out_dir`.
    """
    species_of = dict(
        zip(competition.train["individual_id"], competition.train["species"], strict=True)
    )
    decision = threshold or choose_threshold(
        config.retrieval, val_ranking, truths, test_ranking, species_of
    )
    val_t = decision.for_queries(predicted_species(val_ranking, species_of))
    val_map5 = float(map5_curve(val_ranking, truths, [val_t])[0]) if truths else float("nan")
    test_t = decision.for_queries(predicted_species(test_ranking, species_of))
    predictions = predict(test_ranking, test_t, _fillers(competition))
    if val_images is not None and truths:
        val_predictions = predict(val_ranking, val_t, _fillers(competition))
        table = pd.DataFrame(
            {
                "image": list(val_images),
                "truth": truths,
                "predictions": [" ".join(row) for row in val_predictions],
                "score": val_ranking.top1.astype(float),
            }
        )
        write_csv(table, out_dir / "val_predictions.csv")
    write_submission(dict(zip(competition.test["image"], predictions, strict=True)), submission)
    validate_against_competition(submission, competition)
    details: dict[str, Any] = {
        "name": name,
        "threshold": decision.value,
        "threshold_source": decision.source,
        "per_species": decision.per_species,
        "threshold_curve": [[float(t), float(m)] for t, m in decision.curve],
        "val_map5": val_map5,
        "val_map5_closed": float(map5_curve(val_ranking, truths, [None])[0]) if truths else None,
        "submission": str(submission),
        **(extra or {}),
    }
    test_map5, breakdown = None, None
    if competition.has_solution:
        breakdown = score_breakdown(submission, competition.root / "solution.csv")
        test_map5 = float(breakdown.loc[breakdown["species"] == "all", "map5"].iloc[0])
        write_csv(breakdown, out_dir / "breakdown.csv")
        details["test_map5_closed"] = float(
            map5_curve(test_ranking, competition.test["individual_id"].tolist(), [None])[0]
        )
    details["test_map5"] = test_map5
    if pseudo_labels and config.pseudo.threshold is not None:
        from wildid.pipeline.pseudo import pseudo_round

        details["pseudo"] = pseudo_round(config, competition, test_ranking)
    plot_threshold_curve(
        decision.curve, decision.value, f"{name}: open-set threshold", out_dir / "threshold.png"
    )
    write_text(out_dir / "metrics.json", json.dumps(details, indent=2))
    return Evaluation(
        name, decision.value, val_map5, decision.curve, submission, test_map5, breakdown, details
    )


def evaluate_folds(
    name: str,
    config: Config,
    competition: Competition,
    per_fold: dict[int, Embeddings],
    pseudo_labels: bool = False,
) -> Evaluation:
    """k-fold: tune the threshold out of fold, predict test with the folds' ensemble.

    Each fold's model ranks only its own validation queries against its own training
    part, so every validation score is out of fold (a model never saw the individuals it
    is scored on as new). Test queries are ranked with the folds' embeddings
    concatenated (5 folds x 512 = 2560 dims), the Happywhale ensemble recipe.
    """
    layout = RunLayout.of(config)
    folds = read_folds(layout.folds)
    val_rankings, truths, images = [], [], []
    for k, embeddings in per_fold.items():
        split = fold_split(folds, k)
        ranking, fold_truths, _ = _rank_val(config, competition, split, embeddings)
        val_rankings.append(ranking)
        truths += fold_truths
        images += val_images(competition, split)
    ensemble = concat(list(per_fold.values()), [1.0] * len(per_fold))
    labels = competition.train["individual_id"].to_numpy()
    test_ranking = rank_individuals(
        ensemble.train,
        labels[ensemble.gallery_source()],
        ensemble.test,
        config.retrieval.k,
        **search_options(config.retrieval),
    )
    return evaluate_rankings(
        name,
        config,
        competition,
        stack_rankings(val_rankings),
        truths,
        test_ranking,
        layout.method(name),
        layout.submission(name),
        extra={"folds": sorted(per_fold)},
        pseudo_labels=pseudo_labels,
        val_images=images,
    )


def _rank_val(
    config: Config, competition: Competition, split: pd.DataFrame, embeddings: Embeddings
) -> tuple[Ranking, list[str], np.ndarray]:
    """A split's validation queries ranked against its own training part: the ranking,
    the queries' truths and their rows in `embeddings.train`."""
    source = embeddings.gallery_source()
    roles = _roles(competition, split)
    labels = competition.train["individual_id"].to_numpy()
    fit = np.flatnonzero(roles[source] == "train")
    val = np.flatnonzero(roles == "val")
    ranking = rank_individuals(
        embeddings.train[fit],
        labels[source[fit]],
        embeddings.train[val],
        config.retrieval.k,
        **search_options(config.retrieval),
    )
    truths = split.set_index("image").loc[competition.train["image"].iloc[val], "val_truth"]
    return ranking, truths.tolist(), val
