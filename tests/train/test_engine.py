"""The training engine: exact resume, losses and samplers end to end, outputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
import torch

from wildid import pipeline
from wildid.config import ConfigError
from wildid.errors import RunConflictError, TrainingDivergedError
from wildid.layout import RunLayout, differences, training_settings
from wildid.train.engine import Trainer, epoch_sizes, epochs_within, load_trained

if TYPE_CHECKING:
    from conftest import Tiny

# Every optional part of the engine at once, so the resume test covers their states too.
FULL = [
    "train.epochs=2",
    "train.accumulate=2",
    "train.ema_decay=0.9",
    "loss.subcenters=2",
    "loss.dynamic_margin=true",
    "loss.species_weight=0.5",
    "train.precision=bf16",
]


class Killed(Exception):
    pass


class KilledInEpoch2(Trainer):
    """Dies after training epoch 2's batches, before saving it: a kill mid-run."""

    def validate(self, progress: bool) -> dict[str, float]:
        if self.epoch == 1:
            raise Killed
        return super().validate(progress)


class NaNGradients(Trainer):
    """Puts a NaN into one gradient before the optimizer steps listed in `poisoned`
    (None: every step), as an overflowing layer would."""

    poisoned: set[int] | None = set()

    def _optimizer_step(self) -> None:
        if self.poisoned is None or self.step in self.poisoned:
            grad = next(p.grad for p in self.module.parameters() if p.grad is not None)
            grad.fill_(float("nan"))
        super()._optimizer_step()


def _trainer(cls: type[Trainer], tiny: Tiny, out: Path, *overrides: str) -> Trainer:
    config = tiny.config(out / "working", *overrides)
    return cls(config, pipeline.train_data(tiny.crops, tiny.split, "fullbody"), out / "model")


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    tiny: Tiny, tmp_path: Path
) -> None:
    whole = _trainer(Trainer, tiny, tmp_path / "whole", *FULL).fit(progress=False)
    with pytest.raises(Killed):
        _trainer(KilledInEpoch2, tiny, tmp_path / "resumed", *FULL).fit(progress=False)
    killed = torch.load(tmp_path / "resumed" / "model" / "last.pt", weights_only=True)
    assert killed["epoch"] == 1
    resumed = _trainer(Trainer, tiny, tmp_path / "resumed", *FULL).fit(progress=False)

    a = torch.load(whole.last, weights_only=True)
    b = torch.load(resumed.last, weights_only=True)
    assert a["step"] == b["step"] == 2 * 4  # 72 images / batch 8 / accumulate 2, 2 epochs
    for part in ("train", "ema", "model", "loss"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    # It trained: the weights moved from the initial ones, and the EMA differs from them.
    assert not torch.equal(a["train"]["net.neck.0.weight"], killed["train"]["net.neck.0.weight"])
    assert not torch.equal(a["model"]["neck.0.weight"], a["train"]["net.neck.0.weight"])
    history = pd.read_csv(resumed.out_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert {"loss", "img_per_s", "val_map5", "lr"} <= set(history.columns)
    pd.testing.assert_frame_equal(
        history.drop(columns=["seconds", "img_per_s"]),
        pd.read_csv(whole.out_dir / "history.csv").drop(columns=["seconds", "img_per_s"]),
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss.name=proxy_anchor"],
        ["loss.name=triplet", "train.sampler=m_per_class", "train.m_per_class=4"],
    ],
)
def test_other_losses_train(tiny: Tiny, tmp_path: Path, overrides: list[str]) -> None:
    trainer = _trainer(Trainer, tiny, tmp_path, "train.precision=fp32", *overrides)
    before = trainer.module.net.neck[0].weight.detach().clone()
    result = trainer.fit(progress=False)
    assert result.best.is_file() and len(result.history) == 1
    assert torch.isfinite(torch.tensor(result.history["loss"].iloc[0]))
    assert not torch.equal(before, trainer.module.net.neck[0].weight)


def test_val_every_validates_every_nth_and_the_last_epoch(tiny: Tiny, tmp_path: Path) -> None:
    calls = []

    class Counting(Trainer):
        def validate(self, progress: bool) -> dict[str, float]:
            calls.append(self.epoch + 1)
            return super().validate(progress)

    overrides = ("train.epochs=3", "train.val_every=2", "train.precision=fp32")
    trainer = _trainer(Counting, tiny, tmp_path, *overrides)
    result = trainer.fit(progress=False)
    assert calls == [2, 3]
    assert result.history["val_map5"].isna().tolist() == [True, False, False]
    assert trainer.best_epoch in (2, 3)  # a validated epoch, never the unvalidated first


class MinuteLongFirstEpoch(Trainer):
    """Plans as if the first epoch had taken a minute (the budget's arithmetic, without
    the test's own timing)."""

    def _fit_budget(self, seconds: float, elapsed: float) -> None:
        super()._fit_budget(60.0, 70.0)  # and 10 s of decoding before it


class KilledInEpoch2OfMinuteLong(MinuteLongFirstEpoch, KilledInEpoch2):
    pass


def test_budget_lowers_the_epochs_and_the_schedule_ends_with_them(
    tiny: Tiny, tmp_path: Path
) -> None:
    overrides = ("train.epochs=5", "train.budget_minutes=3", "train.precision=fp32")
    result = _trainer(MinuteLongFirstEpoch, tiny, tmp_path, *overrides).fit(progress=False)
    # 180 s hold 10 s of decoding and 2 epochs of 60 s (3 without the decoding)
    assert result.history["epoch"].tolist() == [1, 2]
    assert result.history["lr"].iloc[-1] == pytest.approx(0.0, abs=1e-12)  # cosine ended
    assert torch.load(result.last, weights_only=True)["epochs"] == 2
    # a budget that holds every epoch leaves train.epochs as it is
    roomy = ("train.epochs=2", "train.budget_minutes=10", "train.precision=fp32")
    full = _trainer(MinuteLongFirstEpoch, tiny, tmp_path / "roomy", *roomy).fit(progress=False)
    assert full.history["epoch"].tolist() == [1, 2]


def test_a_resumed_run_keeps_the_epochs_its_budget_planned(tiny: Tiny, tmp_path: Path) -> None:
    overrides = ("train.epochs=5", "train.budget_minutes=2.5", "train.precision=fp32")
    with pytest.raises(Killed):
        _trainer(KilledInEpoch2OfMinuteLong, tiny, tmp_path, *overrides).fit(progress=False)
    # resumed by a plain trainer whose own timing would plan otherwise: the plan stands
    result = _trainer(Trainer, tiny, tmp_path, *overrides).fit(progress=False)
    assert result.history["epoch"].tolist() == [1, 2]
    assert result.history["lr"].iloc[-1] == pytest.approx(0.0, abs=1e-12)


def test_progressive_sizes_grow_in_even_steps_of_32_to_the_image_size() -> None:
    assert epoch_sizes(160, 256, 4) == [160, 192, 224, 256]
    assert epoch_sizes(128, 256, 6) == [128, 160, 192, 192, 224, 256]  # 153.6 -> 160 ...
    assert epoch_sizes(96, 200, 3) == [96, 160, 200]  # the last is image_size itself
    assert epoch_sizes(None, 256, 3) == [256, 256, 256]
    assert epoch_sizes(160, 256, 1) == [256]  # one epoch: at image_size


def test_budget_counts_the_larger_later_epochs_by_their_pixels() -> None:
    def constant(epochs: int) -> list[int]:
        return epoch_sizes(None, 256, epochs)

    def progressive(epochs: int) -> list[int]:
        return epoch_sizes(128, 256, epochs)

    # same size throughout: the epochs after the first at the first one's pace
    assert epochs_within(60.0, 150.0, constant, 10) == 3
    assert epochs_within(60.0, 30.0, constant, 10) == 1
    assert epochs_within(60.0, 1e6, constant, 10) == 10
    # 128 px first: 4 epochs are 128, 160, 224, 256 px (rounded from 171 and 213),
    # costing (1.5625 + 3.0625 + 4) x 60 s = 517.5 s after the first
    assert progressive(4) == [128, 160, 224, 256]
    assert epochs_within(60.0, 517.5, progressive, 10) == 4
    assert epochs_within(60.0, 517.0, progressive, 10) == 3


def test_progressive_resizing_trains_each_epoch_at_its_size(tiny: Tiny, tmp_path: Path) -> None:
    seen: list[int] = []

    class Watching(Trainer):
        def train_epoch(self, progress: bool) -> float:
            hook = self.module.net.register_forward_pre_hook(
                lambda _, args: seen.append(args[0].shape[-1])
            )
            try:
                return super().train_epoch(progress)
            finally:
                hook.remove()

    overrides = ("train.epochs=3", "train.image_size_start=32", "train.precision=fp32")
    trainer = _trainer(Watching, tiny, tmp_path, *overrides)
    size = trainer.config.train.image_size
    result = trainer.fit(progress=False)
    sizes = epoch_sizes(32, size, 3)
    assert sizes[0] < sizes[-1] == size
    assert result.history["image_size"].tolist() == sizes
    batches = len(trainer.batches)
    assert seen == [s for s in sizes for _ in range(batches)]  # every batch resized


def test_image_size_start_above_the_image_size_is_refused(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size_start=512 is larger"):
        tiny.config(tmp_path, "train.image_size_start=512")


def test_frozen_blocks_keep_their_weights_and_statistics(tiny: Tiny, tmp_path: Path) -> None:
    overrides = ("train.freeze=[conv_stem,bn1,blocks.0]", "train.precision=fp32")
    trainer = _trainer(Trainer, tiny, tmp_path, *overrides)
    before = {k: v.clone() for k, v in trainer.module.net.state_dict().items()}
    result = trainer.fit(progress=False)
    after = load_trained(trainer.config, result.best, torch.device("cpu")).state_dict()
    assert after.keys() == before.keys()  # loads as any trained model
    frozen = ("backbone.conv_stem.", "backbone.bn1.", "backbone.blocks.0.")
    for key, value in before.items():
        if key.startswith(frozen):
            assert torch.equal(after[key], value), key  # weights and running statistics
    moved = [k for k in before if not k.startswith(frozen) and not torch.equal(after[k], before[k])]
    assert any(k.startswith("backbone.blocks.1.") for k in moved)  # the rest trained
    assert "backbone.bn1.running_mean" in before  # BatchNorm is still BatchNorm


def test_a_step_with_non_finite_gradients_is_skipped_not_taken(
    tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Without fp16's GradScaler nothing else would stop one NaN gradient from making
    every weight NaN for the rest of the run."""
    trainer = _trainer(NaNGradients, tiny, tmp_path, "train.epochs=2", "train.precision=fp32")
    trainer.poisoned = {0, 1}
    trainer.fit(progress=False)
    weights = trainer.module.state_dict().values()
    assert all(torch.isfinite(v).all() for v in weights if v.is_floating_point())
    assert "epoch 1: 2 of" in capsys.readouterr().err
    assert trainer.step == 2 * trainer.steps_per_epoch  # the schedule went on


def test_an_epoch_without_one_finite_step_stops_the_training(tiny: Tiny, tmp_path: Path) -> None:
    trainer = _trainer(NaNGradients, tiny, tmp_path, "train.epochs=2", "train.precision=fp32")
    trainer.poisoned = None
    with pytest.raises(TrainingDivergedError, match="epoch 1 had non-finite gradients"):
        trainer.fit(progress=False)


def test_freezing_an_unknown_module_names_the_parts_there_are(tiny: Tiny, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'blocks\.99' is not a submodule.*conv_stem"):
        _trainer(Trainer, tiny, tmp_path, "train.freeze=[blocks.99]")


def test_runs_saved_before_progressive_resizing_and_freezing_still_match(
    tiny: Tiny, tmp_path: Path
) -> None:
    now = training_settings(tiny.config(tmp_path))
    before = {**now, "train": dict(now["train"])}
    del before["train"]["image_size_start"], before["train"]["freeze"]
    assert differences(before, now) == []  # resumed and reused, not "other settings"


def test_checkpoint_of_other_classes_is_refused(tiny: Tiny, tmp_path: Path) -> None:
    config = tiny.config(tmp_path / "working", "train.epochs=0")
    data = pipeline.train_data(tiny.crops, tiny.split, "fullbody")
    Trainer(config, data, tmp_path / "model").fit(progress=False)
    keep = [i for i, ind in enumerate(data.train_ids) if ind != data.train_ids[0]]
    fewer = data.__class__(
        [data.train_paths[i] for i in keep],
        [data.train_ids[i] for i in keep],
        data.val_paths,
        data.val_truths,
    )
    with pytest.raises(RunConflictError, match="classes differ"):
        Trainer(config, fewer, tmp_path / "model").fit(progress=False)


def test_pipeline_trains_each_configured_fold(tiny: Tiny, tmp_path: Path) -> None:
    config = tiny.config(
        tmp_path / "working", "train.folds=3", "train.fold_ids=[0,2]", "train.epochs=0"
    )
    competition, split = pipeline.prepare(config)
    crops = pipeline.crop(config, competition, progress=False)
    best = pipeline.train(config, crops, split, progress=False)
    assert best == [RunLayout.of(config).root / "models" / f"fold{k}" / "best.pt" for k in (0, 2)]
    assert all(path.is_file() for path in best)
    folds = pd.read_csv(RunLayout.of(config).root / "folds.csv")
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    # Fold 2 trained on fold 2's train images (its classes), not fold 0's.
    fold2 = folds[(folds["fold"] == 2) & (folds["role"] == "train")]
    classes = pd.read_csv(RunLayout.of(config).root / "models" / "fold2" / "classes.csv")
    assert set(classes["individual_id"]) == set(fold2["individual_id"])
    with pytest.raises(ValueError, match="fold_ids"):
        pipeline.train(tiny.config(tmp_path / "w2", "train.fold_ids=[1]"), crops, split)
