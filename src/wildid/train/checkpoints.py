"""Finished models from elsewhere: `model.checkpoint`, found, checked, never retrained.

A trained model travels as its `best.pt` (weights, loss state, classes and the settings
that trained it, as JSON). `model.checkpoint` names one file, or a folder holding
`fold<k>/best.pt` files (a run's `models/` folder, a run folder, or a weights dataset made
by `wildid kaggle weights`); they are read in place, so a read-only Kaggle input works.

Before a model is used its recorded settings are compared with the config's on what
shapes the embeddings (the model section and the crops it saw, the image size): a model
trained at 640 px must not embed 512 px crops in silence. Training hyper-parameters
(epochs, learning rates) and where the data lived may differ.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from wildid.config import Config
from wildid.errors import RunConflictError, WildidError
from wildid.layout import RunLayout, differences, training_settings


class CheckpointError(WildidError, FileNotFoundError):
    """`model.checkpoint` names no usable trained model; the message says what to give."""


# What a model's embeddings depend on, beyond its weights.
MODEL_RUNTIME = {"pretrained", "weights_dir", "checkpoint"}
CROP_KEYS = ("kinds", "combine", "margin", "size")


def inference_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The part of `training_settings` a finished model must share with its user."""
    model = {k: v for k, v in settings.get("model", {}).items() if k not in MODEL_RUNTIME}
    crop = {k: settings.get("crop", {}).get(k) for k in CROP_KEYS}
    image_size = settings.get("train", {}).get("image_size")
    return {"model": model, "crop": crop, "train": {"image_size": image_size}}


def _fold(path: Path) -> int | None:
    match = re.fullmatch(r"fold(\d+)", path.parent.name)
    return int(match.group(1)) if match else None


def find_checkpoints(location: str | Path, folds: list[int]) -> dict[int, Path]:
    """{fold: best.pt} for each of `folds`, from `location`: a best.pt (one fold), or a
    folder holding [models/]fold<k>/best.pt."""
    path = Path(location)
    if path.is_file():
        if len(folds) != 1:
            raise CheckpointError(
                f"model.checkpoint={location}: one model for folds {folds}; give the folder "
                "holding fold<k>/best.pt, or set train.fold_ids to one fold."
            )
        return {folds[0]: path}
    if not path.is_dir():
        raise CheckpointError(
            f"model.checkpoint={location}: no such file or folder; give a best.pt or a "
            "folder holding fold<k>/best.pt (on Kaggle: attach the kernel or dataset)."
        )
    files = [*path.glob("fold*/best.pt"), *path.glob("models/fold*/best.pt")]
    found = {_fold(f): f for f in sorted(files) if _fold(f) is not None}
    missing = [k for k in folds if k not in found]
    if missing:
        raise CheckpointError(
            f"model.checkpoint={location}: has fold<k>/best.pt for folds {sorted(found)}, "
            f"not for {missing}; set train.fold_ids to the folds it holds."
        )
    return {k: found[k] for k in folds}


def check_checkpoint(config: Config, path: Path) -> None:
    """Refuse a model whose recorded settings would make other embeddings than `config`'s."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "model" not in state or "settings" not in state:
        raise CheckpointError(
            f"{path}: not a wildid model checkpoint (no weights or settings); use the "
            "best.pt that `wildid train` wrote."
        )
    saved = inference_settings(json.loads(state["settings"]))
    diff = differences(saved, inference_settings(training_settings(config)))
    if diff:
        raise RunConflictError(
            f"{path} was trained with other settings: {'; '.join(diff)}. Use the config it "
            "was trained with (its run's config.yaml) or set these keys to match."
        )


def trained_checkpoints(config: Config, folds: list[int]) -> dict[int, Path]:
    """The checked models `model.checkpoint` names, by fold."""
    found = find_checkpoints(str(config.model.checkpoint), folds)
    for path in found.values():
        check_checkpoint(config, path)
    return found


def model_checkpoint(config: Config, k: int = 0) -> Path:
    """Fold k's finished model for this config: from `model.checkpoint`, else the run's own
    `models/fold<k>/best.pt` (which may not exist yet)."""
    if config.model.checkpoint:
        return find_checkpoints(config.model.checkpoint, [k])[k]
    return RunLayout.of(config).checkpoint(k)
