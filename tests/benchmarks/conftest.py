"""A tiny synthetic folder-per-individual catalogue shared by the benchmark smoke tests:
8 "animals" (a blurred random texture each), 3 sightings of 2 flanks, on random ground."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def _animal(rng: np.random.Generator, pattern: np.ndarray) -> np.ndarray:
    """The individual's pattern pasted at a random place on a random background."""
    photo = rng.integers(60, 120, (120, 160, 3), dtype=np.uint8)
    x, y = (int(v) for v in rng.integers(0, 40, 2))
    photo[y : y + 80, x : x + 120] = pattern
    return photo


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("catalogue")
    rng = np.random.default_rng(0)
    for ind in range(8):
        pattern = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
        pattern = cv2.GaussianBlur(pattern, (5, 5), 0)
        for sighting in range(3):
            for side in ("left", "right"):
                path = root / f"n{ind}" / f"{10 * ind + sighting}_{side}photo.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), _animal(rng, pattern))
    return root
