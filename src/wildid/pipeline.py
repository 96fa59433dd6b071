"""All stages in order: data -> [detect] -> crop -> train -> embed -> retrieve + open set -> submit.

Each stage is a function taking the previous stage's output; `run` chains them for
`wildid run` and the notebooks call them one at a time. Outputs land in
`working/<name>/` (crops are shared in `working/crops/`), the submission in
`submissions/`. Every stage skips or resumes work that is already done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from wildid import cache
from wildid.config import Config, save_config
from wildid.crop import CropSet, make_crops
from wildid.data.competition import Competition, load_competition
from wildid.data.folds import fold_split, make_folds
from wildid.data.transforms import eval_transform
from wildid.detect.train import Detector
from wildid.embed import (
    Embeddings,
    combine_views,
    embed_kind,
    embed_views,
    flip_mode,
    load_class_centres,
    weights_digest,
    write_embeddings,
)
from wildid.io import write_csv, write_text
from wildid.metrics import score_breakdown
from wildid.models.net import EmbeddingNet
from wildid.openset import Threshold, choose_threshold, map5_curve, predict, predicted_species
from wildid.plots import plot_threshold_curve
from wildid.retrieval import (
    PAD,
    ClassCentres,
    Ranking,
    blend_with_head,
    rank_individuals,
    search_options,
)
from wildid.submission import validate_against_competition, write_submission
from wildid.train.engine import TrainData, Trainer, distributed, load_trained, resolve_device


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


def prepare(config: Config) -> tuple[Competition, pd.DataFrame]:
    """Load and validate the competition; split train for validation.

    Writes folds.csv (every fold's roles, `train.folds` of them) and split.csv (fold 0,
    the split returned); with one fold, the split holds out `train.val_fraction`.
    """
    competition = load_competition(config.data)
    tc = config.train
    folds = make_folds(competition.train, tc.folds, tc.val_new_fraction, tc.seed,
                       tc.val_fraction)
    write_csv(folds, config.run_dir / "folds.csv")
    split = fold_split(folds, 0)
    write_csv(split, config.run_dir / "split.csv")
    save_config(config, config.run_dir / "config.yaml")
    return competition, split


def detect(config: Config, competition: Competition, progress: bool = True) -> Detector:
    """Train the fullbody/backfin detector on boxes.csv (skipped when up to date)."""
    from wildid.detect import train as train_detector  # imports ultralytics: only when used

    return train_detector(config, competition, progress)


def crop(
    config: Config,
    competition: Competition,
    progress: bool = True,
    detector: Detector | None = None,
) -> CropSet:
    """Crop every photo per kind from boxes.csv, the detector's boxes, or none (whole)."""
    if config.crop.source == "detector":
        from wildid.detect import crop as detector_crop

        return detector_crop(config, competition, detector, progress)
    return make_crops(competition, config.crop, config.working, progress=progress)


def train_data(
    crops: CropSet,
    split: pd.DataFrame,
    kind: str,
    kinds: Sequence[str] = (),
    ratios: Sequence[float] | None = None,
) -> TrainData:
    """Paths and ids to train on; with several `kinds`, each sample draws one by `ratios`."""
    fit, val = split[split["role"] == "train"], split[split["role"] == "val"]
    kind_paths = {k: crops.paths("train", k, fit["image"]) for k in kinds} if len(kinds) > 1 \
        else None
    return TrainData(
        train_paths=crops.paths("train", kind, fit["image"]),
        train_ids=fit["individual_id"].tolist(),
        val_paths=crops.paths("train", kind, val["image"]),
        val_truths=val["val_truth"].tolist(),
        train_species=fit["species"].tolist() if "species" in fit else None,
        train_kind_paths=kind_paths,
        kind_ratios=None if ratios is None else list(ratios),
    )


def fold_ids(config: Config) -> list[int]:
    """The folds `train` trains: `train.fold_ids`, or all `train.folds` of them."""
    ids = config.train.fold_ids
    if ids is None:
        return list(range(config.train.folds))
    bad = [k for k in ids if not 0 <= k < config.train.folds]
    if bad:
        raise ValueError(f"train.fold_ids {bad} outside 0..{config.train.folds - 1} "
                         f"(train.folds={config.train.folds}).")
    return list(ids)


def train(
    config: Config, crops: CropSet, split: pd.DataFrame, progress: bool = True
) -> list[Path]:
    """Train each configured fold into models/fold<k>/; returns their best checkpoints.

    Fold 0 trains on `split`; other folds on their rows of folds.csv (written by
    `prepare`). Each fold resumes a killed run from its last.pt.
    """
    folds = None
    best = []
    for k in fold_ids(config):
        if k == 0:
            fold = split
        else:
            if folds is None:
                folds = pd.read_csv(config.run_dir / "folds.csv", dtype=str,
                                    keep_default_na=False).astype({"fold": int})
            fold = fold_split(folds, k)
        cc = config.crop
        data = train_data(crops, fold, cc.kinds[0], cc.kinds, cc.ratios)
        out_dir = config.run_dir / "models" / f"fold{k}"
        if distributed()[0] == 0:
            save_config(config, out_dir / "config.yaml")
        best.append(Trainer(config, data, out_dir).fit(progress).best)
    return best


def embed(
    config: Config,
    competition: Competition,
    crops: CropSet,
    forward: torch.nn.Module,
    out_dir: Path | None = None,
    progress: bool = True,
) -> Embeddings:
    """Embed every train and test image for each crop kind; combine kinds as configured.

    `forward` maps a batch of images to embeddings and has a `mean_std` attribute (the
    normalisation its weights expect). With `out_dir`, each kind's views are stored there
    (see wildid.embed) and reused while the weights, config and crops are unchanged.
    """
    transform = eval_transform(config.train.image_size, forward.mean_std)
    ec = config.embed
    device = resolve_device(config.train.device)
    mode = flip_mode(ec.flip_tta)

    def embedder(paths: list[str], desc: str) -> tuple[np.ndarray, np.ndarray | None]:
        return embed_views(forward, paths, transform, ec.batch_size, mode != "none",
                           config.train.num_workers, device, desc, progress)

    tables = {"train": competition.train, "test": competition.test}
    digest = weights_digest(forward) if isinstance(forward, torch.nn.Module) else None
    views = {}
    for kind in config.crop.kinds:
        paths = {s: crops.paths(s, kind, t["image"]) for s, t in tables.items()}
        if out_dir is None or digest is None:
            views[kind] = {name: array for s in tables for name, array in
                           zip((s, f"{s}_flip"), embedder(paths[s], f"embed {s}/{kind}"),
                               strict=True) if array is not None}
            continue
        key = cache.fingerprint(digest, config.section_dict("crop", "model"),
                                config.train.image_size, mode != "none", ec.dtype, paths)
        views[kind] = embed_kind(Path(out_dir) / kind, key, paths, embedder, ec.dtype)
    result = combine_views(views, mode, config.crop.combine)
    if out_dir is not None:
        write_embeddings(out_dir, result, competition.train["image"], competition.test["image"],
                         ec.dtype)
    return result


def _fillers(competition: Competition) -> list[str]:
    counts = competition.train.groupby("individual_id").size()
    return list(counts.sort_values(ascending=False, kind="stable").index[:5])


def evaluate(
    name: str,
    config: Config,
    competition: Competition,
    split: pd.DataFrame,
    embeddings: Embeddings,
    out_dir: Path,
    centres: ClassCentres | None | str = "auto",
) -> Evaluation:
    """Tune the new_individual threshold on validation, predict test, write and score.

    `centres` (the ArcFace head, blended in when retrieval.head_weight > 0): "auto" loads
    them from this run's fold0 checkpoint when their size matches the embeddings.
    """
    if isinstance(centres, str):
        centres = _run_centres(config, embeddings) if config.retrieval.head_weight > 0 else None
    val_ranking, truths, test_ranking = rank_val_test(config, competition, split, embeddings,
                                                      centres)
    return evaluate_rankings(name, config, competition, val_ranking, truths, test_ranking,
                             out_dir)


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
    options = search_options(rc)
    source = embeddings.gallery_source()
    roles = split["role"].to_numpy()
    labels = competition.train["individual_id"].to_numpy()
    fit = np.flatnonzero(roles[source] == "train")
    val = np.flatnonzero(roles == "val")
    val_queries = embeddings.train[val]
    val_ranking = rank_individuals(embeddings.train[fit], labels[source[fit]], val_queries,
                                   rc.k, **options)
    test_ranking = rank_individuals(embeddings.train, labels[source], embeddings.test, rc.k,
                                    **options)
    if centres is not None:
        val_ranking = blend_with_head(val_ranking, val_queries, centres, rc.head_weight)
        test_ranking = blend_with_head(test_ranking, embeddings.test, centres, rc.head_weight)
    return val_ranking, split.loc[roles == "val", "val_truth"].tolist(), test_ranking


def _run_centres(config: Config, embeddings: Embeddings) -> ClassCentres | None:
    checkpoint = config.run_dir / "models" / "fold0" / "best.pt"
    if not checkpoint.is_file():
        return None
    centres = load_class_centres(checkpoint)
    if centres.weights.shape[1] != embeddings.train.shape[1]:
        print(f"retrieval.head_weight ignored: head of {checkpoint} is "
              f"{centres.weights.shape[1]}-d, embeddings are {embeddings.train.shape[1]}-d.")
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
    threshold: Threshold | None = None,
    extra: dict[str, Any] | None = None,
) -> Evaluation:
    """Choose the threshold (unless given), predict test, write, validate and score.

    `extra` is recorded in metrics.json beside the scores (e.g. an ensemble's members).
    """
    species_of = dict(zip(competition.train["individual_id"], competition.train["species"],
                          strict=True))
    decision = threshold or choose_threshold(config.retrieval, val_ranking, truths,
                                             test_ranking, species_of)
    val_t = decision.for_queries(predicted_species(val_ranking, species_of))
    val_map5 = float(map5_curve(val_ranking, truths, [val_t])[0]) if truths else float("nan")
    test_t = decision.for_queries(predicted_species(test_ranking, species_of))
    predictions = predict(test_ranking, test_t, _fillers(competition))
    submission = Path(config.submissions) / (
        "submission.csv" if name == "trained" else f"submission_{name}.csv"
    )
    write_submission(dict(zip(competition.test["image"], predictions, strict=True)), submission)
    validate_against_competition(submission, competition)
    details: dict[str, Any] = {
        "name": name, "threshold": decision.value, "threshold_source": decision.source,
        "per_species": decision.per_species, "val_map5": val_map5,
        "val_map5_closed": float(map5_curve(val_ranking, truths, [None])[0]) if truths else None,
        "submission": str(submission), **(extra or {}),
    }
    test_map5, breakdown = None, None
    if competition.has_solution:
        breakdown = score_breakdown(submission, competition.root / "solution.csv")
        test_map5 = float(breakdown.loc[breakdown["species"] == "all", "map5"].iloc[0])
        write_csv(breakdown, out_dir / "breakdown.csv")
        details["test_map5_closed"] = float(map5_curve(
            test_ranking, competition.test["individual_id"].tolist(), [None])[0])
    details["test_map5"] = test_map5
    if config.pseudo.threshold is not None and name != "baseline":
        from wildid.pseudo import pseudo_round

        details["pseudo"] = pseudo_round(config, competition, test_ranking)
    plot_threshold_curve(decision.curve, decision.value, f"{name}: open-set threshold",
                         out_dir / "threshold.png")
    write_text(out_dir / "metrics.json", json.dumps(details, indent=2))
    return Evaluation(name, decision.value, val_map5, decision.curve, submission, test_map5,
                      breakdown, details)


def evaluate_folds(
    name: str,
    config: Config,
    competition: Competition,
    per_fold: dict[int, Embeddings],
    out_dir: Path,
) -> Evaluation:
    """k-fold: tune the threshold out of fold, predict test with the folds' ensemble.

    Each fold's model ranks only its own validation queries against its own training
    part, so every validation score is out of fold (a model never saw the individuals it
    is scored on as new). Test queries are ranked with the folds' embeddings
    concatenated (5 folds x 512 = 2560 dims), the Happywhale ensemble recipe.
    """
    from wildid.ensemble import concat

    folds = pd.read_csv(config.run_dir / "folds.csv", dtype=str,
                        keep_default_na=False).astype({"fold": int})
    val_rankings, truths = [], []
    for k, embeddings in per_fold.items():
        ranking, fold_truths = rank_val(config, competition, fold_split(folds, k), embeddings)
        val_rankings.append(ranking)
        truths += fold_truths
    ensemble = concat(list(per_fold.values()), [1.0] * len(per_fold))
    labels = competition.train["individual_id"].to_numpy()
    test_ranking = rank_individuals(ensemble.train, labels[ensemble.gallery_source()],
                                    ensemble.test, config.retrieval.k,
                                    **search_options(config.retrieval))
    return evaluate_rankings(name, config, competition, stack_rankings(val_rankings), truths,
                             test_ranking, out_dir, extra={"folds": sorted(per_fold)})


def rank_val(
    config: Config, competition: Competition, split: pd.DataFrame, embeddings: Embeddings
) -> tuple[Ranking, list[str]]:
    """A split's validation queries ranked against its own training part, and their truths."""
    source = embeddings.gallery_source()
    roles = split.set_index("image").loc[competition.train["image"], "role"].to_numpy()
    labels = competition.train["individual_id"].to_numpy()
    fit = np.flatnonzero(roles[source] == "train")
    val = np.flatnonzero(roles == "val")
    ranking = rank_individuals(embeddings.train[fit], labels[source[fit]], embeddings.train[val],
                               config.retrieval.k, **search_options(config.retrieval))
    truths = split.set_index("image").loc[competition.train["image"].iloc[val], "val_truth"]
    return ranking, truths.tolist()


def stack_rankings(rankings: list[Ranking]) -> Ranking:
    """One Ranking holding the queries of several, over the union of their individuals."""
    individuals = np.unique(np.concatenate([r.individuals for r in rankings]))
    width = max(r.codes.shape[1] for r in rankings)
    codes = np.full((sum(len(r) for r in rankings), width), PAD, dtype=np.int64)
    scores = np.full(codes.shape, -np.inf, dtype=np.float32)
    start = 0
    for r in rankings:
        rows = slice(start, start + len(r))
        remapped = np.searchsorted(individuals, r.individuals)[np.maximum(r.codes, 0)]
        codes[rows, : r.codes.shape[1]] = np.where(r.codes == PAD, PAD, remapped)
        scores[rows, : r.codes.shape[1]] = r.scores
        start += len(r)
    return Ranking(codes, scores, individuals)


@dataclass(frozen=True)
class RunResult:
    trained: Evaluation
    baseline: Evaluation | None
    seconds: dict[str, float]


def run(config: Config, progress: bool = True) -> RunResult:
    """Every stage in order; see the module docstring for where outputs land."""
    timer = _Timer()
    with timer("prepare"):
        competition, split = prepare(config)
    detector = None
    if config.crop.source == "detector":
        with timer("detect"):
            detector = detect(config, competition, progress)
    with timer("crop"):
        crops = crop(config, competition, progress, detector)
    with timer("train"):
        bests = train(config, crops, split, progress)
    device = resolve_device(config.train.device)
    with timer("embed"):
        per_fold = {
            k: embed(config, competition, crops, load_trained(config, best, device),
                     config.run_dir / "embeddings" / f"fold{k}", progress)
            for k, best in zip(fold_ids(config), bests, strict=True)
        }
    with timer("evaluate"):
        if len(per_fold) == 1:
            trained = evaluate("trained", config, competition, split, *per_fold.values(),
                               config.run_dir)
        else:
            trained = evaluate_folds("trained", config, competition, per_fold, config.run_dir)
    baseline = None
    if config.baseline:
        with timer("baseline"):
            baseline = run_baseline(config, competition, split, crops, device, progress)
    return RunResult(trained, baseline, timer.seconds)


class _PooledFeatures(torch.nn.Module):
    """Pretrained backbone + GeM, no training: the baseline every method must beat."""

    def __init__(self, net: EmbeddingNet) -> None:
        super().__init__()
        self.net = net
        self.mean_std = net.mean_std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.pooled(images)


def run_baseline(
    config: Config,
    competition: Competition,
    split: pd.DataFrame,
    crops: CropSet,
    device: torch.device,
    progress: bool = True,
) -> Evaluation:
    net = EmbeddingNet(config.model).to(device).eval()
    embeddings = embed(config, competition, crops, _PooledFeatures(net), progress=progress)
    return evaluate("baseline", config, competition, split, embeddings,
                    config.run_dir / "baseline")


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> _Timer:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._name] = round(time.perf_counter() - self._start, 1)
