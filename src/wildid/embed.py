"""Embedding stage: images -> L2-normalised vectors, with optional horizontal-flip TTA."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from wildid.data.dataset import ImageDataset


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


@torch.inference_mode()
def embed_paths(
    forward: Callable[[torch.Tensor], torch.Tensor] | nn.Module,
    paths: Sequence[str],
    transform: Callable[..., dict],
    batch_size: int = 64,
    flip_tta: bool = True,
    num_workers: int = 1,
    device: str | torch.device = "cpu",
    desc: str = "embed",
    progress: bool = True,
) -> np.ndarray:
    """Embed every image; with flip TTA the embedding is the mean of image and mirror.

    Returns float32 (N, D), each row unit length, in the order of `paths`.
    """
    if isinstance(forward, nn.Module):
        forward.eval()
    loader = DataLoader(
        ImageDataset(paths, transform=transform),
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=False,
    )
    chunks = []
    for images, _ in tqdm(loader, desc=desc, disable=not progress, unit="batch", leave=False):
        images = images.to(device)
        feats = F.normalize(forward(images).float(), dim=1)
        if flip_tta:
            feats = feats + F.normalize(forward(images.flip(-1)).float(), dim=1)
        chunks.append(feats.cpu().numpy())
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return l2_normalise(np.concatenate(chunks))
