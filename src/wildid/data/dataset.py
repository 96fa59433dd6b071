"""Torch Datasets over image files, with an integer label per image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

# A loader worker that gets no batch in this long is reported as hung, not waited on forever.
LOADER_TIMEOUT_S = 600


def worker_init(_worker_id: int) -> None:
    """Loader workers: one torch thread each (OpenCV's one is inherited), the cores belong
    to the model."""
    torch.set_num_threads(1)


def loader_options(num_workers: int) -> dict:
    """DataLoader keywords for `num_workers` forked workers that cannot deadlock.

    A worker forked while the parent's OpenCV thread pool is alive inherits its locks but
    not its threads; its first OpenCV call (or `cv2.setNumThreads`) can then wait forever.
    With workers, the parent's OpenCV is made single-threaded first (no pool to inherit;
    the parent only decodes while cropping, where it costs little), and a worker that
    delivers nothing for LOADER_TIMEOUT_S raises instead of hanging.
    """
    if num_workers <= 0:
        return {"num_workers": 0}
    cv2.setNumThreads(1)
    return {"num_workers": num_workers, "worker_init_fn": worker_init, "timeout": LOADER_TIMEOUT_S}


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
