"""Decoded crops: every image letterboxed once to the model's size, kept as uint8.

Training augments these pixels every epoch; validation and the embed stage feed them to
the model as they are (`eval_transform` is the same letterbox plus a normalisation that
`normalise_batch` does on a whole batch). So no crop is decoded twice in a run, and no
loader worker competes with the model for the cores where none is needed. With a folder
(`RunLayout.pixels`, shared by the runs of one working folder) the arrays are kept on
disk, named by a fingerprint of the image paths, their file stamps and the size, and read
back as memory maps; a replaced photo or crop changes the name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from wildid.cache import file_stamp, fingerprint
from wildid.data.dataset import ImageDataset, loader_options
from wildid.data.transforms import MeanStd, letterbox
from wildid.io import write_npy


def pixel_bytes(n_images: int, size: int) -> int:
    return n_images * size * size * 3


def letterbox_all(
    paths: Sequence[str], size: int, num_workers: int = 0, progress: bool = True
) -> np.ndarray:
    """Decode and letterbox every image: uint8 (N, size, size, 3)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    loader = DataLoader(
        ImageDataset(paths, transform=A.Compose(letterbox(size))),
        batch_size=64,
        collate_fn=_stack_arrays,
        **loader_options(num_workers),
    )
    start = 0
    for batch in tqdm(loader, desc="decode crops", disable=not progress, unit="batch", leave=False):
        out[start : start + len(batch)] = batch
        start += len(batch)
    return out


def _stack_arrays(items: list[tuple[np.ndarray, int]]) -> np.ndarray:
    return np.stack([image for image, _ in items])


def pixels_file(folder: str | Path, paths: Sequence[str], size: int) -> Path:
    """Where the letterboxed pixels of `paths` at `size` are kept under `folder`."""
    key = fingerprint(size, [(str(p), file_stamp(p)) for p in paths])
    return Path(folder) / f"{size}px-{len(paths)}-{key}.npy"


def cached_pixels(
    paths: Sequence[str],
    size: int,
    folder: str | Path | None,
    num_workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """`letterbox_all(paths, size)`, decoded once per folder: a memory map when kept."""
    if folder is None:
        return letterbox_all(paths, size, num_workers, progress)
    path = pixels_file(folder, paths, size)
    if path.is_file():
        try:
            kept = np.load(path, mmap_mode="r")
            if kept.shape == (len(paths), size, size, 3) and kept.dtype == np.uint8:
                return kept
        except (OSError, ValueError):
            pass  # a damaged file: decode again and replace it
    write_npy(path, letterbox_all(paths, size, num_workers, progress))
    return np.load(path, mmap_mode="r")


def normalise_batch(images: torch.Tensor, mean_std: MeanStd) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) normalised as `eval_transform` does.

    The result is in channels_last memory layout (a permuted view of the NHWC batch).
    """
    mean = torch.tensor(mean_std[0], device=images.device) * 255
    std = torch.tensor(mean_std[1], device=images.device) * 255
    return ((images.float() - mean) / std).permute(0, 3, 1, 2)


def pixel_batches(
    pixels: np.ndarray,
    batch_size: int,
    mean_std: MeanStd,
    device: str | torch.device = "cpu",
    desc: str = "embed",
    progress: bool = True,
) -> Iterator[torch.Tensor]:
    """Normalised float batches of `pixels` in order (for the model; no loader workers)."""
    starts = range(0, len(pixels), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, unit="batch", leave=False):
        block = torch.from_numpy(np.array(pixels[start : start + batch_size]))  # own, writable
        yield normalise_batch(block.to(device), mean_std)
