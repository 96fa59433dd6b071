"""Training batches: which images (samplers), from where (RAM cache or disk), augmented how.

Three things make a resumed or multi-process run see exactly the batches of a plain one:
- the sampler draws an epoch's order from (seed, epoch) alone, for every process alike,
  and hands each process its own share of the batches;
- every draw of an image carries its own augmentation seed, so the augmentation does not
  depend on which loader worker happens to process it;
- nothing else keeps random state across epochs.

Why decoded pixels: on a small CPU box, decoding and letterboxing the same crops every
epoch costs about as much as augmenting them, on the cores the model needs. Crops are
decoded and letterboxed once (`wildid.data.pixels`, exactly as `eval_transform` does),
kept as uint8 when they fit in `train.cache_gb`, and only augmented per epoch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as pml_common
from torch.utils.data import Dataset, Sampler

from wildid.data.dataset import read_rgb
from wildid.data.transforms import letterbox, train_transform


def augmentation(size: int, letterboxed: bool = False) -> A.Compose:
    """`train_transform` up to its uint8 output: normalising a whole batch at once in
    the training process is cheaper than per image in a worker, and a uint8 batch is a
    quarter of the bytes to pass between processes and to copy to a GPU.

    `letterboxed`: the images come letterboxed to `size` already (the RAM cache), so the
    letterbox steps, which would copy them unchanged, are left out; they draw no random
    numbers, so both forms augment an image identically.
    """
    steps = train_transform(size, ((0.0,) * 3, (1.0,) * 3)).transforms
    drop = (A.Normalize, ToTensorV2, *(type(t) for t in letterbox(size) if letterboxed))
    return A.Compose([t for t in steps if not isinstance(t, drop)])


class TrainImages(Dataset):
    """Training images, indexed by (image index, augmentation seed) pairs; each item is
    the augmented uint8 (H, W, 3) tensor, its label and its species.

    `paths_by_kind` holds one path list per crop kind (fullbody, backfin, whole...), the
    same images in the same order; each sample draws its kind by `kind_ratios` (1st place
    on Happywhale: about 0.6 / 0.3 / 0.1), from its own seed, so a resumed or
    multi-process run draws the same kinds. `cache` holds the letterboxed images, one
    (N, size, size, 3) array per kind (`wildid.data.pixels.cached_pixels`); without it
    each image is read from disk and letterboxed by `transform` itself.
    """

    def __init__(
        self,
        paths_by_kind: Sequence[Sequence[str]],
        labels: Sequence[int],
        species: Sequence[int],
        transform: A.Compose,
        cache: Sequence[np.ndarray] | None = None,
        kind_ratios: Sequence[float] | None = None,
    ) -> None:
        self.paths = [list(paths) for paths in paths_by_kind]
        if not self.paths or len({len(paths) for paths in self.paths}) != 1:
            raise ValueError(
                "paths_by_kind must list the same images for every crop kind; "
                f"got lengths {[len(paths) for paths in self.paths]}."
            )
        self.labels, self.species = list(labels), list(species)
        self.transform, self.cache = transform, cache
        self.kind_p = kind_probabilities(len(self.paths), kind_ratios)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = key
        kind = int(np.random.default_rng([seed, 1]).choice(len(self.kind_p), p=self.kind_p))
        image = (
            self.cache[kind][index] if self.cache is not None else read_rgb(self.paths[kind][index])
        )
        # One generator shared by all the transforms (albumentations' own set_random_seed
        # would give each transform the same stream, correlating their coin flips).
        self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        image = np.require(self.transform(image=image)["image"], requirements="CW")
        image = torch.from_numpy(image)  # a copy where nothing changed the read-only cache
        return image, self.labels[index], self.species[index]


def kind_probabilities(kinds: int, ratios: Sequence[float] | None) -> np.ndarray:
    """Sampling probability of each crop kind: `ratios` normalised, or uniform."""
    weights = np.ones(kinds) if ratios is None else np.asarray(ratios, dtype=float)
    if len(weights) != kinds or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            f"crop.ratios {list(weights)} must give one weight >= 0 per crop "
            f"kind ({kinds} kinds), not all zero."
        )
    return weights / weights.sum()


@contextmanager
def _pml_random(state: np.random.RandomState) -> Iterator[None]:
    """pytorch-metric-learning samples from a module-global RNG; lend it a seeded one."""
    saved = pml_common.NUMPY_RANDOM
    pml_common.NUMPY_RANDOM = state
    try:
        yield
    finally:
        pml_common.NUMPY_RANDOM = saved


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """Batches of (image index, augmentation seed) for one epoch and one process.

    `mode` "random": a permutation of all images; "m_per_class": pytorch-metric-learning's
    MPerClassSampler (m images of each of batch_size/m individuals per batch). The
    epoch's global order depends on (seed, epoch) only; process `rank` of `world` takes
    every world-th batch. Batches per process are a multiple of `accumulate`.
    """

    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        mode: str = "random",
        m: int = 4,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        accumulate: int = 1,
    ) -> None:
        super().__init__()
        self.labels = np.asarray(labels)
        self.batch_size, self.mode, self.m, self.seed = batch_size, mode, m, seed
        self.rank, self.world, self.accumulate = rank, world, accumulate
        self.epoch = 0
        if mode == "m_per_class":
            if batch_size % m:
                raise ValueError(
                    f"train.batch_size={batch_size} must be a multiple of train.m_per_class={m}."
                )
            classes = len(np.unique(self.labels))
            if m * classes < batch_size:
                raise ValueError(
                    f"m_per_class sampling needs m * individuals ({m} * {classes})"
                    f" >= batch_size ({batch_size}); lower train.batch_size."
                )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        per_rank = len(self.labels) // (self.batch_size * self.world)
        return per_rank - per_rank % self.accumulate

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.RandomState([self.seed, self.epoch])
        n = len(self.labels)
        if self.mode == "m_per_class":
            with _pml_random(rng):
                sampler = MPerClassSampler(self.labels, self.m, self.batch_size, n)
                order = np.fromiter(iter(sampler), dtype=np.int64)
        else:
            order = rng.permutation(n)
        seeds = rng.randint(0, 2**31 - 1, size=len(order))
        used = len(self) * self.world * self.batch_size
        pairs = np.stack([order[:used], seeds[:used]], axis=1).reshape(
            len(self) * self.world, self.batch_size, 2
        )
        for batch in pairs[self.rank :: self.world]:
            yield [(int(i), int(s)) for i, s in batch]
