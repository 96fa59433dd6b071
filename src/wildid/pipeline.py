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

import numpy as np
import pandas as pd
import torch

from wildid.config import Config, save_config
from wildid.crop import CropSet, make_crops
from wildid.data.competition import Competition, load_competition
from wildid.data.folds import split_validation
from wildid.data.transforms import eval_transform
from wildid.detect.train import Detector
from wildid.embed import embed_paths, l2_normalise
from wildid.io import write_csv, write_npy, write_text
from wildid.metrics import map_at_k, score_breakdown
from wildid.models.net import EmbeddingNet
from wildid.plots import plot_threshold_curve
from wildid.openset import predict, tune_threshold
from wildid.retrieval import Ranking, rank_individuals
from wildid.submission import validate_against_competition, write_submission
from wildid.train.engine import TrainData, Trainer, load_trained, resolve_device


@dataclass(frozen=True)
class Embeddings:
    """Unit-length embeddings of every train and test image, in table order."""

    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    name: str
    threshold: float | None
    val_map5: float
    curve: list[tuple[float, float]]
    submission: Path
    test_map5: float | None = None
    breakdown: pd.DataFrame | None = field(default=None, repr=False)


def prepare(config: Config) -> tuple[Competition, pd.DataFrame]:
    """Load and validate the competition; split train for validation (split.csv)."""
    competition = load_competition(config.data)
    tc = config.train
    split = split_validation(competition.train, tc.val_fraction, tc.val_new_fraction, tc.seed)
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
        train_kind_paths=kind_paths,
        kind_ratios=None if ratios is None else list(ratios),
    )


def train(config: Config, crops: CropSet, split: pd.DataFrame, progress: bool = True) -> Path:
    """Train fold 0; returns the best checkpoint. Resumes a killed run from last.pt."""
    cc = config.crop
    data = train_data(crops, split, cc.kinds[0], cc.kinds, cc.ratios)
    out_dir = config.run_dir / "models" / "fold0"
    save_config(config, out_dir / "config.yaml")
    return Trainer(config, data, out_dir).fit(progress).best


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
    normalisation its weights expect).
    """
    transform = eval_transform(config.train.image_size, forward.mean_std)
    ec = config.embed
    device = resolve_device(config.train.device)
    parts: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for split, table in (("train", competition.train), ("test", competition.test)):
        for kind in config.crop.kinds:
            parts[split].append(embed_paths(
                forward, crops.paths(split, kind, table["image"]), transform, ec.batch_size,
                ec.flip_tta, config.train.num_workers, device, f"embed {split}/{kind}", progress,
            ))
    combine = np.hstack if config.crop.combine == "concat" else lambda xs: np.mean(xs, axis=0)
    result = Embeddings(*(l2_normalise(combine(parts[s])) for s in ("train", "test")))
    if out_dir is not None:
        for split in ("train", "test"):
            write_npy(out_dir / f"{split}.npy", getattr(result, split).astype(ec.dtype))
        write_csv(pd.concat([competition.train[["image"]].assign(split="train"),
                             competition.test[["image"]].assign(split="test")]),
                  out_dir / "index.csv")
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
) -> Evaluation:
    """Tune the new_individual threshold on validation, predict test, write and score."""
    roles = split["role"].to_numpy()
    k = config.retrieval.k
    val_ranking = rank_individuals(
        embeddings.train[roles == "train"], split.loc[roles == "train", "individual_id"].to_numpy(),
        embeddings.train[roles == "val"], k,
    )
    truths = split.loc[roles == "val", "val_truth"].tolist()
    threshold, curve = _threshold(config, val_ranking, truths)
    val_map5 = map_at_k(predict(val_ranking, threshold), truths) if truths else float("nan")
    test_ranking = rank_individuals(
        embeddings.train, competition.train["individual_id"].to_numpy(), embeddings.test, k
    )
    predictions = predict(test_ranking, threshold, _fillers(competition))
    submission = Path(config.submissions) / (
        "submission.csv" if name == "trained" else f"submission_{name}.csv"
    )
    write_submission(dict(zip(competition.test["image"], predictions, strict=True)), submission)
    validate_against_competition(submission, competition)
    result = Evaluation(name, threshold, val_map5, curve, submission)
    if competition.has_solution:
        breakdown = score_breakdown(submission, competition.root / "solution.csv")
        test_map5 = float(breakdown.loc[breakdown["species"] == "all", "map5"].iloc[0])
        result = Evaluation(name, threshold, val_map5, curve, submission, test_map5, breakdown)
        write_csv(breakdown, out_dir / "breakdown.csv")
    plot_threshold_curve(curve, threshold, f"{name}: open-set threshold",
                         out_dir / "threshold.png")
    write_text(out_dir / "metrics.json", json.dumps(
        {"name": name, "threshold": threshold, "val_map5": val_map5,
         "test_map5": result.test_map5, "submission": str(submission)}, indent=2))
    return result


def _threshold(
    config: Config, ranking: Ranking, truths: list[str]
) -> tuple[float | None, list[tuple[float, float]]]:
    if config.retrieval.threshold is not None or not truths:
        return config.retrieval.threshold, []
    return tune_threshold(ranking, truths, config.retrieval.threshold_grid)


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
        best = train(config, crops, split, progress)
    device = resolve_device(config.train.device)
    with timer("embed"):
        model = load_trained(config, best, device)
        embeddings = embed(config, competition, crops, model,
                           config.run_dir / "embeddings" / "fold0", progress)
    with timer("evaluate"):
        trained = evaluate("trained", config, competition, split, embeddings, config.run_dir)
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
