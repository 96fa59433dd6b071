"""End to end: `pipeline.run` on the tiny synthetic competition (1 epoch, 64 px)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wildid import pipeline
from wildid.config import Config, load_config
from wildid.data.competition import load_competition
from wildid.submission import validate_against_competition

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(make_config, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001
    """One full run (baseline included), shared by the tests of this module."""
    config = make_config(tmp_path_factory.mktemp("run"), "baseline=true")
    return config, pipeline.run(config, progress=False)


def test_submission_is_valid_for_the_competition(tiny_run) -> None:  # noqa: ANN001
    config, result = tiny_run
    competition = load_competition(config.data)
    assert result.trained.submission == Path(config.submissions) / "submission.csv"
    validate_against_competition(result.trained.submission, competition)
    submission = pd.read_csv(result.trained.submission)
    assert sorted(submission["image"]) == sorted(competition.test["image"])


def test_metrics_and_plots_are_written(tiny_run) -> None:  # noqa: ANN001
    config, result = tiny_run
    metrics = json.loads((config.run_dir / "metrics.json").read_text())
    assert metrics["name"] == "trained"
    assert metrics["test_map5"] == pytest.approx(result.trained.test_map5)
    assert 0.0 <= metrics["test_map5"] <= 1.0 and 0.0 <= metrics["val_map5"] <= 1.0
    assert metrics["threshold"] in config.retrieval.threshold_grid
    breakdown = pd.read_csv(config.run_dir / "breakdown.csv")
    assert "all" in set(breakdown["species"])
    assert (config.run_dir / "threshold.png").stat().st_size > 0
    assert set(result.seconds) == {"prepare", "crop", "train", "embed", "evaluate", "baseline"}


def test_resolved_config_is_saved_beside_the_outputs(tiny_run) -> None:  # noqa: ANN001
    config, _ = tiny_run
    for path in (config.run_dir / "config.yaml", config.run_dir / "models/fold0/config.yaml"):
        assert load_config(path) == config, path


def test_embeddings_are_saved_in_table_order(tiny_run) -> None:  # noqa: ANN001
    config, _ = tiny_run
    competition = load_competition(config.data)
    folder = config.run_dir / "embeddings" / "fold0"
    train, test = np.load(folder / "train.npy"), np.load(folder / "test.npy")
    assert train.shape == (len(competition.train), config.model.embedding_dim)
    assert test.shape == (len(competition.test), config.model.embedding_dim)
    assert train.dtype == np.float16
    assert np.allclose(np.linalg.norm(train.astype(np.float32), axis=1), 1, atol=1e-2)
    index = pd.read_csv(folder / "index.csv", dtype=str)
    assert index["image"].tolist() == [*competition.train["image"], *competition.test["image"]]


def test_baseline_is_scored_with_its_own_submission(tiny_run) -> None:  # noqa: ANN001
    config, result = tiny_run
    assert result.baseline is not None
    assert result.baseline.submission.name == "submission_baseline.csv"
    validate_against_competition(result.baseline.submission, load_competition(config.data))
    assert (config.run_dir / "baseline" / "metrics.json").is_file()


def test_rerun_reuses_crops_and_the_trained_model(tiny_run) -> None:  # noqa: ANN001
    config, _ = tiny_run
    best = config.run_dir / "models" / "fold0" / "best.pt"
    crops_before = sorted((Path(config.working) / "crops").iterdir())
    stamp = best.stat().st_mtime_ns
    competition, split = pipeline.prepare(config)
    crops = pipeline.crop(config, competition, progress=False)
    assert crops.root in crops_before
    assert pipeline.train(config, crops, split, progress=False) == [best]
    assert best.stat().st_mtime_ns == stamp  # resumed at its last epoch: nothing to train
    assert sorted((Path(config.working) / "crops").iterdir()) == crops_before


def test_bad_data_folder_fails_before_any_work(tmp_path: Path) -> None:
    from wildid.data.competition import DataError

    config = Config(data=str(tmp_path / "missing"), working=str(tmp_path / "w"))
    with pytest.raises(DataError, match="competition folder not found"):
        pipeline.run(config, progress=False)
    assert not (tmp_path / "w").exists()


def test_k_fold_run_tunes_out_of_fold_and_ensembles_the_folds(make_config, tmp_path) -> None:  # noqa: ANN001
    config = make_config(tmp_path, "train.folds=2", "baseline=false")
    result = pipeline.run(config, progress=False)
    competition = load_competition(config.data)
    validate_against_competition(result.trained.submission, competition)
    metrics = json.loads((config.run_dir / "metrics.json").read_text())
    assert metrics["folds"] == [0, 1]
    folds = pd.read_csv(config.run_dir / "folds.csv")
    # every validation query of both folds was scored out of fold
    assert metrics["val_map5"] is not None
    assert (folds["role"] == "val").sum() > 0
    for k in (0, 1):
        assert (config.run_dir / f"embeddings/fold{k}").is_dir()
        assert (config.run_dir / f"models/fold{k}/best.pt").is_file()


def test_stacked_rankings_keep_each_query_and_its_labels() -> None:
    from wildid.retrieval import PAD, Ranking

    a = Ranking(np.array([[0, 1]]), np.array([[0.9, 0.5]], np.float32), np.array(["x", "y"]))
    b = Ranking(np.array([[1, 0, PAD], [0, PAD, PAD]]),
                np.array([[0.8, 0.2, -np.inf], [0.7, -np.inf, -np.inf]], np.float32),
                np.array(["w", "y"]))
    stacked = pipeline.stack_rankings([a, b])
    assert stacked.labels == [["x", "y"], ["y", "w"], ["w"]]
    assert stacked.scores.shape == (3, 3) and np.isneginf(stacked.scores[0, 2])
