"""Decoded crops: letterboxed once, kept under the working folder, redone when a photo
changes, and embedded exactly as the path-based loader would."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from wildid.data import pixels
from wildid.data.pixels import cached_pixels, letterbox_all, normalise_batch, pixels_file
from wildid.data.transforms import eval_transform
from wildid.infer.embed import embed_pixels, embed_views


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, shape in enumerate([(40, 60), (50, 30), (33, 33)]):
        path = tmp_path / f"p{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


def test_pixels_are_decoded_once_and_kept_as_a_memory_map(photos, tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    first = cached_pixels(photos, 32, folder, progress=False)
    assert isinstance(first, np.memmap) and first.shape == (3, 32, 32, 3)
    assert np.array_equal(first, letterbox_all(photos, 32, progress=False))
    monkeypatch.setattr(pixels, "letterbox_all", lambda *a, **k: pytest.fail("decoded twice"))
    assert np.array_equal(cached_pixels(photos, 32, folder, progress=False), first)


def test_a_replaced_photo_or_a_damaged_file_is_decoded_again(photos, tmp_path):
    folder = tmp_path / "cache"
    before = pixels_file(folder, photos, 32)
    cached_pixels(photos, 32, folder, progress=False)
    cv2.imwrite(photos[1], np.zeros((20, 20, 3), np.uint8))
    os.utime(photos[1], ns=(1, 1))  # a new stamp even within the clock's resolution
    after = pixels_file(folder, photos, 32)
    assert after != before
    assert cached_pixels(photos, 32, folder, progress=False)[1].max() == 0
    after.write_bytes(b"not an array")
    assert cached_pixels(photos, 32, folder, progress=False).shape == (3, 32, 32, 3)
    assert pixels_file(folder, photos, 48) != after  # another size, another file


def test_embedding_pixels_matches_embedding_the_photos(photos, tmp_path):
    mean_std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    kept = cached_pixels(photos, 32, tmp_path, progress=False)
    plain, mirrored = embed_pixels(model, kept, mean_std, 2, True, progress=False)
    ref_plain, ref_mirrored = embed_views(
        model, photos, eval_transform(32, mean_std), 2, True, 0, progress=False
    )
    assert np.allclose(plain, ref_plain, atol=1e-5)
    assert np.allclose(mirrored, ref_mirrored, atol=1e-5)
    batch = normalise_batch(torch.from_numpy(np.array(kept)), mean_std)
    assert batch.shape == (3, 3, 32, 32) and batch.is_contiguous(memory_format=torch.channels_last)
