"""Read what a finished run left in its folder: the inputs of every report piece.

Nothing here computes a score; `wildid.report.figures` does. Each file is optional: a run
stopped after training has curves but no predictions, an ensemble has no training
history, a run whose data folder moved has no photos. What is missing becomes a note
(`RunFiles.notes`) that the report prints where the piece would be, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wildid.config import Config, ConfigError, load_config
from wildid.data.competition import Competition, DataError, load_competition
from wildid.layout import RunLayout


@dataclass(frozen=True)
class FoldEmbeddings:
    """One fold's stored embeddings, one row per image (flip-gallery mirrors left out)."""

    name: str  # fold0, ensemble
    train_images: list[str]
    train: np.ndarray  # (train images, D), float32
    test_images: list[str]
    test: np.ndarray  # (test images, D), float32


@dataclass(frozen=True)
class RunFiles:
    layout: RunLayout
    config: Config | None
    metrics: dict[str, Any]
    baseline: dict[str, Any]  # baseline/metrics.json ({} without a baseline)
    split: pd.DataFrame | None  # fold 0's image, species, individual_id, role, val_truth
    val_predictions: pd.DataFrame | None  # image, truth, predictions, score
    histories: dict[int, pd.DataFrame]  # fold -> history.csv
    embeddings: FoldEmbeddings | None
    competition: Competition | None  # tables only; photos may have moved
    submission: pd.DataFrame | None  # image, predictions
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def folds(self) -> int:
        return self.config.train.folds if self.config is not None else 1

    def photo(self, image: str, split: str = "train") -> Path | None:
        """The photo of a train (or test) image, if it is still where the run read it."""
        if self.competition is None:
            return None
        path = self.competition.image_path(split, image)
        return path if path.is_file() else None


def _csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"image": str}, keep_default_na=False)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _existing(path: str | Path, layout: RunLayout) -> Path:
    """A path the run recorded: as written (relative to where it ran), else relative to
    the folder above `working/` (the usual checkout layout)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    beside = layout.working.parent / path
    return beside if beside.exists() else path


def _config(layout: RunLayout, notes: list[str]) -> Config | None:
    if not layout.config.is_file():
        notes.append(f"{layout.config} not found: settings unknown.")
        return None
    try:
        return load_config(layout.config)
    except ConfigError as err:
        notes.append(f"{layout.config} does not load with this version ({err}).")
        return None


def _histories(
    layout: RunLayout, config: Config | None, notes: list[str]
) -> dict[int, pd.DataFrame]:
    folds = range(config.train.folds) if config is not None else range(1)
    found = {}
    for k in folds:
        path = layout.fold(k) / "history.csv"
        if not path.is_file() and config is not None and config.model.checkpoint:
            from wildid.train.checkpoints import CheckpointError, model_checkpoint

            try:  # a model trained elsewhere: its history lies beside it
                path = model_checkpoint(config, k).parent / "history.csv"
            except (CheckpointError, FileNotFoundError):
                continue
        table = _csv(path)
        if table is not None and len(table):
            found[k] = table
    if not found:
        notes.append("no history.csv: no training curves (no epoch ran in this run's folder).")
    return found


def _array(path: Path) -> np.ndarray:
    """A stored embedding file (wildid.infer.embed's format) without importing torch."""
    return np.load(path, mmap_mode="r")


def _embeddings(layout: RunLayout, notes: list[str]) -> FoldEmbeddings | None:
    for name in ("fold0", "ensemble"):
        folder = layout.all_embeddings / name
        if not all((folder / n).is_file() for n in ("index.csv", "train.npy", "test.npy")):
            continue
        index = pd.read_csv(folder / "index.csv", dtype={"image": str}, keep_default_na=False)
        train = index[index["split"] == "train"]
        query = (
            (train["view"] == "query").to_numpy() if "view" in train else np.ones(len(train), bool)
        )
        test = index[index["split"] == "test"]
        return FoldEmbeddings(
            name,
            train["image"][query].tolist(),
            np.asarray(_array(folder / "train.npy")[: int(query.sum())], dtype=np.float32),
            test["image"].tolist(),
            np.asarray(_array(folder / "test.npy"), dtype=np.float32),
        )
    notes.append(f"no embeddings under {layout.all_embeddings}: no image-level scores or map.")
    return None


def _competition(config: Config | None, layout: RunLayout, notes: list[str]) -> Competition | None:
    if config is None:
        return None
    root = _existing(config.data, layout)
    try:
        return load_competition(root, check_images=False)
    except DataError as err:
        notes.append(f"the competition folder is not readable ({err}): no test scores or photos.")
        return None


def read_run(layout: RunLayout) -> RunFiles:
    """Everything `wildid report` reads from a run folder (see the module docstring)."""
    notes: list[str] = []
    config = _config(layout, notes)
    metrics_path = layout.metrics()
    metrics = _json(metrics_path)
    if not metrics:
        notes.append(f"{metrics_path} not found: the run has not been evaluated yet.")
    predictions = _csv(layout.val_predictions())
    if predictions is None and metrics:
        notes.append(
            f"{layout.val_predictions()} not found (a run evaluated before wildid wrote it): "
            "`wildid run` again re-evaluates it without retraining."
        )
    submission = None
    if metrics.get("submission"):
        submission = _csv(_existing(metrics["submission"], layout))
    return RunFiles(
        layout=layout,
        config=config,
        metrics=metrics,
        baseline=_json(layout.metrics("baseline")),
        split=_csv(layout.split),
        val_predictions=predictions,
        histories=_histories(layout, config, notes),
        embeddings=_embeddings(layout, notes),
        competition=_competition(config, layout, notes),
        submission=submission,
        notes=notes,
    )
