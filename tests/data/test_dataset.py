"""Tests for the crop-kind sampling dataset used when training on several crop kinds."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from wildid.config import ConfigError, load_config
from wildid.data.dataset import CropKindDataset


def _images(root: Path, kind: str, shade: int, n: int) -> list[str]:
    paths = []
    for i in range(n):
        path = root / kind / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((4, 4, 3), shade, np.uint8))
        paths.append(str(path))
    return paths


def test_each_sample_draws_a_kind_by_the_ratios(tmp_path: Path) -> None:
    shades = {"fullbody": 10, "backfin": 20, "whole": 30}
    paths = {kind: _images(tmp_path, kind, shade, 3) for kind, shade in shades.items()}
    dataset = CropKindDataset(paths, [0.6, 0.3, 0.1], labels=[0, 1, 2])
    np.random.seed(0)
    drawn = [int(dataset[i % 3][0][0, 0, 0]) for i in range(3000)]
    freq = {kind: drawn.count(shade) / len(drawn) for kind, shade in shades.items()}
    assert freq == pytest.approx({"fullbody": 0.6, "backfin": 0.3, "whole": 0.1}, abs=0.03)
    assert [dataset[i][1] for i in range(3)] == [0, 1, 2]  # label follows the image


def test_kinds_must_list_the_same_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="same images"):
        CropKindDataset({"fullbody": ["a.jpg", "b.jpg"], "backfin": ["a.jpg"]})
    with pytest.raises(ValueError, match="one weight"):
        CropKindDataset({"fullbody": ["a.jpg"], "backfin": ["a.jpg"]}, ratios=[1.0])


def test_config_ratios_must_match_kinds() -> None:
    with pytest.raises(ConfigError, match="crop.ratios"):
        load_config(None, ["crop.kinds=[fullbody, backfin]", "crop.ratios=[0.6, 0.3, 0.1]"])
    config = load_config(None, ["crop.kinds=[fullbody, backfin, whole]",
                                "crop.ratios=[0.6, 0.3, 0.1]"])
    assert config.crop.ratios == [0.6, 0.3, 0.1]
