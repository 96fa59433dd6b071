"""Torch Datasets over image files, with an integer label per image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
