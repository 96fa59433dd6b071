"""Torch Datasets over image files, with an integer label per image."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


def read_rgb(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: cannot read image (missing or corrupt file).")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageDataset(Dataset):
    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | None = None,
        transform: Callable[..., dict] | None = None,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = read_rgb(self.paths[index])
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return image, self.labels[index]


class CropKindDataset(Dataset):
    """Each training image in several crop kinds; every sample draws one kind by `ratios`.

    Why: the winning Happywhale model saw the full body most of the time, the back fin
    often and the whole photo sometimes (about 0.6 / 0.3 / 0.1), so one embedding serves
    every kind at inference, where the kinds' embeddings are combined. The draw uses the
    global NumPy generator, which the training loader seeds per worker and per epoch.
    """

    def __init__(
        self,
        paths_by_kind: Mapping[str, Sequence[str | Path]],
        ratios: Sequence[float] | None = None,
        labels: Sequence[int] | None = None,
        transform: Callable[..., dict] | None = None,
    ) -> None:
        self.kinds = list(paths_by_kind)
        lengths = {kind: len(paths) for kind, paths in paths_by_kind.items()}
        if not self.kinds or len(set(lengths.values())) != 1:
            raise ValueError(f"paths_by_kind must list the same images for every kind; got "
                             f"{lengths or 'no kind'}.")
        weights = np.ones(len(self.kinds)) if ratios is None else np.asarray(ratios, float)
        if len(weights) != len(self.kinds) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"ratios {list(weights)} must give one weight >= 0 per kind "
                             f"{self.kinds}, not all zero.")
        self.probabilities = weights / weights.sum()
        self.paths = [[str(p) for p in paths_by_kind[kind]] for kind in self.kinds]
        n = lengths[self.kinds[0]]
        self.labels = list(labels) if labels is not None else [-1] * n
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        kind = np.random.choice(len(self.kinds), p=self.probabilities)
        image = read_rgb(self.paths[kind][index])
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return image, self.labels[index]
