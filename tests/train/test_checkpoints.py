"""model.checkpoint: a finished model from a read-only place embeds without training."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from wildid import pipeline
from wildid.errors import RunConflictError
from wildid.train.checkpoints import CheckpointError, find_checkpoints, model_checkpoint
from wildid.train.engine import Trainer

from .conftest import Tiny


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _stamps(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_a_trained_model_is_used_in_place_and_nothing_retrains(tiny: Tiny, tmp_path: Path):
    trained = tiny.config(tmp_path / "first")
    best = pipeline.train(trained, tiny.crops, tiny.split, progress=False)[0]
    models = best.parents[1]  # working/<run>/models
    _read_only(models)
    before = _stamps(models)

    elsewhere = tmp_path / "second"
    for location in (best, models, models.parent):  # the file, models/, the run folder
        config = tiny.config(elsewhere, f"model.checkpoint={location}")
        assert pipeline.train(config, tiny.crops, tiny.split, progress=False) == [best]
        assert model_checkpoint(config, 0) == best
    assert _stamps(models) == before  # read, never written
    assert not (elsewhere / trained.name / "models").exists()  # nothing trained here

    other = tiny.config(elsewhere, f"model.checkpoint={best}", "train.image_size=64")
    with pytest.raises(RunConflictError, match=r"train.image_size 48 -> 64"):
        pipeline.train(other, tiny.crops, tiny.split, progress=False)
    # training hyper-parameters do not shape the embeddings: they may differ
    longer = tiny.config(elsewhere, f"model.checkpoint={best}", "train.epochs=5", "train.lr=0.1")
    assert pipeline.train(longer, tiny.crops, tiny.split, progress=False) == [best]
    with pytest.raises(CheckpointError, match=r"folds \[0\], not for \[1\]"):
        find_checkpoints(models, [1])
    with pytest.raises(CheckpointError, match="no such file or folder"):
        find_checkpoints(tmp_path / "nowhere", [0])
    for path in [models, *models.rglob("*")]:  # let pytest clean up
        path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)


def test_a_copied_in_best_pt_is_not_silently_retrained(tiny: Tiny, tmp_path: Path) -> None:
    trained = tiny.config(tmp_path / "first")
    best = pipeline.train(trained, tiny.crops, tiny.split, progress=False)[0]
    config = tiny.config(tmp_path / "second")
    target = Path(config.working) / config.name / "models" / "fold0" / "best.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(best.read_bytes())
    stamp = os.stat(target).st_mtime_ns
    data = pipeline.train_data(tiny.crops, tiny.split, "fullbody")
    with pytest.raises(RunConflictError, match=r"without last.pt .* model.checkpoint="):
        Trainer(config, data, target.parent).fit(progress=False)
    assert os.stat(target).st_mtime_ns == stamp
