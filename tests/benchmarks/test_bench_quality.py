"""Smoke test of the quality benchmark's whole code path on a tiny synthetic catalogue.

The real benchmark (`make bench-quality`) needs ../shared/datasets/nyala and about an hour;
this runs every step (import, CAM boxes, baselines, SIFT, a one-epoch training, fusion,
both protocols, the report) on a dozen textured "animals" in a few seconds of compute.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
bench_quality = pytest.importorskip("bench_quality")


def _animal(rng: np.random.Generator, pattern: np.ndarray) -> np.ndarray:
    """The individual's pattern pasted at a random place on a random background."""
    photo = rng.integers(60, 120, (120, 160, 3), dtype=np.uint8)
    x, y = (int(v) for v in rng.integers(0, 40, 2))
    photo[y:y + 80, x:x + 120] = pattern
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


def test_bench_quality_runs_end_to_end(catalogue: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    figures = bench_quality.main([
        "--data", str(catalogue), "--out", str(out), "--calibration", "8", "--shortlist", "4",
        "--workers", "1", "--no-progress", "--per-sighting",
        "train.epochs=1", "train.image_size=64", "train.batch_size=8", "train.num_workers=0",
        "crop.size=96",
    ])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == figures
    methods = {"imagenet_mobilenetv2_100", "imagenet_efficientnet_lite0", "sift", "trained",
               "trained+sift"}
    methods |= {f"{m} [sighting]" for m in methods}
    assert set(figures["closed"]) == methods and set(figures["open"]) == methods
    for scores in figures["closed"].values():
        assert 0.0 <= scores["top1"] <= scores["map5"] + 1e-9 <= 1.0 + 1e-9
    for scores in figures["open"].values():
        assert 0.0 <= scores["baus"] <= 1.0
    table = (out / "results.md").read_text()
    assert "| trained+sift |" in table and "Command:" in table
    assert (out / "data" / "closed" / "boxes.csv").is_file()
