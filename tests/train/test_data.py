"""Samplers and augmentation seeds: what makes resumed and multi-process runs exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wildid.data.pixels import letterbox_all, normalise_batch
from wildid.data.transforms import eval_transform
from wildid.train.data import EpochBatches, TrainImages, augmentation

LABELS = np.repeat(np.arange(12), [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6])  # 42 images


def _epoch(sampler: EpochBatches, epoch: int) -> list[list[tuple[int, int]]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("mode", ["random", "m_per_class"])
def test_epoch_depends_on_seed_and_epoch_only(mode: str) -> None:
    sampler = EpochBatches(LABELS, 8, mode, m=2, seed=3)
    first = _epoch(sampler, 1)
    _epoch(sampler, 0)
    assert _epoch(sampler, 1) == first  # what ran before does not matter
    assert _epoch(EpochBatches(LABELS, 8, mode, m=2, seed=3), 1) == first  # a new process
    assert _epoch(sampler, 2) != first
    assert len(first) == len(sampler) == 42 // 8
    assert all(len(batch) == 8 for batch in first)


def test_random_epoch_draws_each_image_once() -> None:
    indices = [i for batch in _epoch(EpochBatches(LABELS, 8), 0) for i, _ in batch]
    assert len(set(indices)) == len(indices) == 40


def test_m_per_class_batches() -> None:
    for batch in _epoch(EpochBatches(LABELS, 8, "m_per_class", m=4, seed=0), 0):
        _, counts = np.unique(LABELS[[i for i, _ in batch]], return_counts=True)
        assert (counts == 4).all()
    with pytest.raises(ValueError, match="multiple"):
        EpochBatches(LABELS, 10, "m_per_class", m=4)


@pytest.mark.parametrize("mode", ["random", "m_per_class"])
def test_ranks_share_out_the_batches_of_one_process(mode: str) -> None:
    """Two processes see, between them, the batches one process would see with 2x the
    batches: every world-th one, no batch twice."""
    single = _epoch(EpochBatches(LABELS, 4, mode, m=2, seed=1), 0)
    ranks = [
        _epoch(EpochBatches(LABELS, 4, mode, m=2, seed=1, rank=r, world=2), 0) for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(single) // 2
    assert ranks[0] == single[0::2][: len(ranks[0])]
    assert ranks[1] == single[1::2][: len(ranks[1])]


def test_accumulation_keeps_whole_steps() -> None:
    assert len(EpochBatches(LABELS, 4, accumulate=3)) == 9  # 10 batches -> 3 steps of 3


def test_augmentation_follows_the_seed(tmp_path) -> None:
    import cv2

    paths = []
    for k in range(3):
        image = np.random.default_rng(k).integers(0, 255, (40, 60, 3), dtype=np.uint8)
        paths.append(str(tmp_path / f"{k}.jpg"))
        cv2.imwrite(paths[-1], image)
    transform = augmentation(32)
    cache = letterbox_all(paths, 32, progress=False)
    cached = TrainImages([paths], [0, 1, 2], [0, 0, 0], transform, cache[None])
    disk = TrainImages([paths], [0, 1, 2], [0, 0, 0], transform)
    # the engine's cached form leaves the letterbox out; the images come out the same
    lean = TrainImages([paths], [0, 1, 2], [0, 0, 0], augmentation(32, True), cache[None])
    assert len(lean.transform.transforms) == len(transform.transforms) - 2
    a, label, _ = cached[(1, 7)]
    assert label == 1 and a.shape == (32, 32, 3) and a.dtype == torch.uint8
    cached[(2, 8)]  # another draw in between changes nothing
    assert torch.equal(cached[(1, 7)][0], a)
    assert torch.equal(disk[(1, 7)][0], a)  # the cache holds what the disk path makes
    assert all(torch.equal(lean[(i, 7 + i)][0], disk[(i, 7 + i)][0]) for i in range(3))
    assert not torch.equal(cached[(1, 9)][0], a)


def test_each_sample_draws_a_crop_kind_by_the_ratios(tmp_path) -> None:
    """Three kinds of crop of the same images, told apart by their grey level."""
    import albumentations as A
    import cv2

    shades = {"fullbody": 10, "backfin": 20, "whole": 30}
    kinds = []
    for kind, shade in shades.items():
        kinds.append([str(tmp_path / f"{kind}{i}.png") for i in range(3)])
        for path in kinds[-1]:
            cv2.imwrite(path, np.full((4, 4, 3), shade, np.uint8))
    dataset = TrainImages(kinds, [0, 1, 2], [0, 0, 0], A.Compose([]), kind_ratios=[6, 3, 1])
    drawn = [int(dataset[(seed % 3, seed)][0][0, 0, 0]) for seed in range(3000)]
    freq = {kind: drawn.count(shade) / len(drawn) for kind, shade in shades.items()}
    assert freq == pytest.approx({"fullbody": 0.6, "backfin": 0.3, "whole": 0.1}, abs=0.03)
    assert [dataset[(i, 0)][1] for i in range(3)] == [0, 1, 2]  # the label follows the image
    assert dataset[(1, 5)][0][0, 0, 0] == dataset[(1, 5)][0][0, 0, 0]  # the seed fixes it


def test_crop_kinds_must_list_the_same_images() -> None:
    import albumentations as A

    with pytest.raises(ValueError, match="same images"):
        TrainImages([["a.jpg", "b.jpg"], ["a.jpg"]], [0, 1], [0, 0], A.Compose([]))
    with pytest.raises(ValueError, match="one weight"):
        TrainImages([["a.jpg"], ["a.jpg"]], [0], [0], A.Compose([]), kind_ratios=[1.0])


def test_batch_normalisation_matches_eval_transform() -> None:
    mean_std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    expected = torch.stack([eval_transform(16, mean_std)(image=i)["image"] for i in images])
    batch = normalise_batch(torch.from_numpy(images), mean_std)
    assert batch.shape == (2, 3, 16, 16)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(batch, expected, atol=1e-5)
