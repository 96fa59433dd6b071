"""End to end: `pipeline.run` on the tiny synthetic competition (1 epoch, 64 px)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from wildid import pipeline
from wildid.config import Config, load_config
from wildid.data.competition import load_competition
from wildid.evaluation.submission import validate_against_competition
from wildid.infer.retrieval import stack_rankings
from wildid.layout import RunLayout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(make_config, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001
    """One full run (baseline included), shared by the tests of this module."""
    config = make_config(tmp_path_factory.mktemp("run"), "baseline=true")
    return config, pipeline.run(config, progress=False)


def test_submission_is_valid_for_the_competition(tiny_run) -> None:  # noqa: ANN001
    config, result = tiny_run
    competition = load_competition(config.data)
    assert result.trained.submission == Path(config.submissions) / f"{config.name}.csv"
    validate_against_competition(result.trained.submission, competition)
    submission = pd.read_csv(result.trained.submission)
    assert sorted(submission["image"]) == sorted(competition.test["image"])


def test_metrics_and_plots_are_written(tiny_run) -> None:  # noqa: ANN001
    config, result = tiny_run
    metrics = json.loads((RunLayout.of(config).root / "metrics.json").read_text())
    assert metrics["name"] == "trained"
    assert metrics["test_map5"] == pytest.approx(result.trained.test_map5)
    assert 0.0 <= metrics["test_map5"] <= 1.0 and 0.0 <= metrics["val_map5"] <= 1.0
    assert metrics["threshold"] in config.retrieval.threshold_grid
    breakdown = pd.read_csv(RunLayout.of(config).root / "breakdown.csv")
    assert "all" in set(breakdown["species"])
    assert (RunLayout.of(config).root / "threshold.png").stat().st_size > 0
    assert set(result.seconds) == {
        "prepare",
        "crop",
        "train",
        "embed",
        "evaluate",
        "baseline",
        "report",
    }
    assert result.report == RunLayout.of(config).report / "index.html"
    assert (RunLayout.of(config).val_predictions()).is_file()


def test_resolved_config_is_saved_beside_the_outputs(tiny_run) -> None:  # noqa: ANN001
    config, _ = tiny_run
    for path in (
        RunLayout.of(config).root / "config.yaml",
        RunLayout.of(config).root / "models/fold0/config.yaml",
    ):
        assert load_config(path) == config, path


def test_embeddings_are_saved_in_table_order(tiny_run) -> None:  # noqa: ANN001
    config, _ = tiny_run
    competition = load_competition(config.data)
    folder = RunLayout.of(config).root / "embeddings" / "fold0"
    train, test = np.load(folder / "train.npy"), np.load(folder / "test.npy")
    assert train.shape == (len(competition.train), config.model.embedding_dim)
    assert test.shape == (len(competition.test), config.model.embedding_dim)
    assert train.dtype == np.float16
    assert np.allclose(np.linalg.norm(train.astype(np.float32), axis=1), 1, atol=1e-2)
    index = pd.read_csv(folder / "index.csv", dtype=str)
    assert index["image"].tolist() == [*competition.train["image"], *competition.test["image"]]


def test_embed_image_size_sets_the_size_crops_are_embedded_at(tiny_run) -> None:  # noqa: ANN001
    config, _ = tiny_run
    competition, _ = pipeline.prepare(config)
    crops = pipeline.crop(config, competition, progress=False)
    seen: set[tuple[int, int]] = set()

    class SizeProbe(torch.nn.Module):
        mean_std = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            seen.add(tuple(images.shape[-2:]))
            return torch.nn.functional.normalize(images.float().mean(dim=(2, 3)), dim=1)

    assert config.embed_size == config.train.image_size  # unset: the training size
    larger = config.model_copy(deep=True)
    larger.embed.image_size = config.train.image_size + 32
    assert larger.embed_size == config.train.image_size + 32
    pipeline.embed(larger, competition, crops, SizeProbe(), progress=False)
    assert seen == {(larger.embed_size, larger.embed_size)}


def test_baseline_is_scored_with_its_own_submission(tiny_run) -> None:  # noqa: ANN001
    config, result = tiny_run
    assert result.baseline is not None
    assert result.baseline.submission.name == f"{config.name}_baseline.csv"
    validate_against_competition(result.baseline.submission, load_competition(config.data))
    assert (RunLayout.of(config).root / "baseline" / "metrics.json").is_file()


def test_rerun_reuses_crops_and_the_trained_model(tiny_run) -> None:  # noqa: ANN001
    config, _ = tiny_run
    best = RunLayout.of(config).root / "models" / "fold0" / "best.pt"
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
    metrics = json.loads((RunLayout.of(config).root / "metrics.json").read_text())
    assert metrics["folds"] == [0, 1]
    folds = pd.read_csv(RunLayout.of(config).root / "folds.csv")
    # every validation query of both folds was scored out of fold
    assert metrics["val_map5"] is not None
    assert (folds["role"] == "val").sum() > 0
    for k in (0, 1):
        assert (RunLayout.of(config).root / f"embeddings/fold{k}").is_dir()
        assert (RunLayout.of(config).root / f"models/fold{k}/best.pt").is_file()


def test_stacked_rankings_keep_each_query_and_its_labels() -> None:
    from wildid.infer.retrieval import PAD, Ranking

    a = Ranking(np.array([[0, 1]]), np.array([[0.9, 0.5]], np.float32), np.array(["x", "y"]))
    b = Ranking(
        np.array([[1, 0, PAD], [0, PAD, PAD]]),
        np.array([[0.8, 0.2, -np.inf], [0.7, -np.inf, -np.inf]], np.float32),
        np.array(["w", "y"]),
    )
    stacked = stack_rankings([a, b])
    assert stacked.labels == [["x", "y"], ["y", "w"], ["w"]]
    assert stacked.scores.shape == (3, 3) and np.isneginf(stacked.scores[0, 2])


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_changed_training_settings_under_the_same_name_are_refused(tiny_run) -> None:  # noqa: ANN001
    from wildid.errors import RunConflictError

    config, _ = tiny_run
    root = RunLayout.of(config).root
    before = _files(root)
    changed = config.model_copy(deep=True)
    changed.train.lr, changed.loss.margin = 0.5, 0.0
    with pytest.raises(
        RunConflictError,
        match=r"train\.lr 0\.001 -> 0\.5.*loss\.margin|"
        r"loss\.margin 0\.3 -> 0\.0.*train\.lr",
    ):
        pipeline.run(changed, progress=False)
    assert _files(root) == before  # nothing rewritten, the record not falsified


def test_runtime_settings_may_change_under_the_same_name(tiny_run) -> None:  # noqa: ANN001
    config, _ = tiny_run
    changed = config.model_copy(deep=True)
    changed.train.num_workers, changed.retrieval.k = 0, 20
    pipeline.prepare(changed)  # no conflict: workers and search breadth shape no model


def test_saved_config_is_what_trained_the_checkpoint_beside_it(tiny_run) -> None:  # noqa: ANN001
    import torch

    from wildid.layout import training_settings

    config, _ = tiny_run
    fold = RunLayout.of(config).fold(0)
    for name in ("best.pt", "last.pt"):
        state = torch.load(fold / name, map_location="cpu", weights_only=True)
        assert json.loads(state["settings"]) == training_settings(load_config(fold / "config.yaml"))


def test_the_trainer_refuses_to_resume_with_other_settings(tiny_run) -> None:  # noqa: ANN001
    from wildid.errors import RunConflictError

    config, _ = tiny_run
    competition, split = pipeline.prepare(config)
    crops = pipeline.crop(config, competition, progress=False)
    changed = config.model_copy(deep=True)
    changed.train.epochs = 3  # a longer schedule is another model, not a continuation
    with pytest.raises(RunConflictError, match=r"train\.epochs 1 -> 3"):
        pipeline.train(changed, crops, split, progress=False)


def test_the_same_config_on_other_data_is_refused_and_leaves_the_run_alone(
    tiny_run,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    import shutil

    from wildid.errors import RunConflictError

    config, _ = tiny_run
    root = RunLayout.of(config).root
    before = _files(root)
    other = Path(shutil.copytree(config.data, tmp_path / "other"))
    table = pd.read_csv(other / "train.csv")
    table.iloc[: len(table) - 3].to_csv(other / "train.csv", index=False)
    moved = config.model_copy(update={"data": str(other)})
    with pytest.raises(RunConflictError, match="data"):
        pipeline.run(moved, progress=False)
    assert _files(root) == before
    fresh = config.model_copy(update={"data": str(other), "name": "other", "baseline": False})
    result = pipeline.run(fresh, progress=False)
    validate_against_competition(result.trained.submission, load_competition(other))
    assert _files(root) == before


def test_two_runs_leave_two_submissions_each_named_in_its_metrics(
    tiny_run,
    make_config,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    config, first = tiny_run
    second_config = make_config(
        Path(config.working).parent, "name=second", "baseline=false", "retrieval.head_weight=0.5"
    )
    second = pipeline.run(second_config, progress=False)
    assert first.trained.submission != second.trained.submission
    for run_config, result in ((config, first), (second_config, second)):
        assert result.trained.submission.is_file()
        metrics = json.loads((RunLayout.of(run_config).root / "metrics.json").read_text())
        assert metrics["submission"] == str(result.trained.submission)
        validate_against_competition(result.trained.submission, load_competition(run_config.data))


def test_head_blend_from_a_saved_checkpoint_changes_the_ranking(tiny_run) -> None:  # noqa: ANN001
    from wildid.infer.embed import load_class_centres
    from wildid.notebook import load_embeddings

    config, result = tiny_run
    centres = load_class_centres(RunLayout.of(config).checkpoint(0))
    assert centres.weights.shape[1] == config.model.embedding_dim
    competition = load_competition(config.data)
    embeddings = load_embeddings(config, competition)
    split = pd.read_csv(RunLayout.of(config).split, dtype=str, keep_default_na=False)
    blended = config.model_copy(deep=True)
    blended.retrieval.head_weight = 0.5
    from wildid.pipeline.evaluate import rank_val_test

    plain = rank_val_test(config, competition, split, embeddings)[2]
    mixed = rank_val_test(blended, competition, split, embeddings, centres)[2]
    assert not np.allclose(plain.scores, mixed.scores)


def test_crop_then_train_with_two_workers_in_one_process(tiny_comp: Path, tmp_path: Path) -> None:
    """The hang of a forked loader worker after the parent used OpenCV's thread pool."""
    import subprocess
    import sys

    from tests.conftest import FAST, MINI

    overrides = [o for o in FAST if "num_workers" not in o] + [
        f"data={tiny_comp}",
        f"working={tmp_path / 'w'}",
        f"submissions={tmp_path / 's'}",
        "train.num_workers=2",
        "train.cache_gb=0",
        "crop.size=200",
    ]
    script = f"""
import cv2
cv2.setNumThreads(4)  # OpenCV's pool alive in the parent, as on any multi-core machine
from wildid import pipeline
from wildid.config import load_config
config = load_config({str(MINI)!r}, {overrides!r})
competition, split = pipeline.prepare(config)
crops = pipeline.crop(config, competition, progress=False)
for _ in range(20):  # keep the pool busy right up to the fork
    cv2.resize(cv2.imread(str(crops.root / crops.table["path"].iloc[0])), (400, 400))
print("best", pipeline.train(config, crops, split, progress=False)[0])
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best.pt" in done.stdout


def test_a_bad_photo_stops_prepare_before_the_run_folder_or_is_skipped(
    tiny_copy: Path, tmp_path: Path
) -> None:
    from tests.conftest import FAST, MINI
    from wildid.data.check import CheckError

    bad = sorted((tiny_copy / "train_images").iterdir())[0]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    base = [f"data={tiny_copy}", f"working={tmp_path / 'w'}", *FAST]
    config = load_config(MINI, base)
    with pytest.raises(CheckError, match=f"train_images/{bad.name}: truncated"):
        pipeline.prepare(config, progress=False)
    assert not RunLayout.of(config).root.exists()  # stopped before writing the run
    skip = load_config(MINI, [*base, "check.on_bad=skip"])
    competition, split = pipeline.prepare(skip, progress=False)
    assert bad.name not in set(competition.train["image"]) | set(split["image"])
    assert len(competition.test) == len(load_competition(tiny_copy).test)
