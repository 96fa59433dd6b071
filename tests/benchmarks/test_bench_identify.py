"""bench_identify's nyala comparison on a tiny synthetic catalogue: identify reproduces the
quality benchmark's closed-set top-1 (same model, same scores)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_identify  # noqa: E402  (a broken benchmark must fail, not skip)

TINY = [
    "--calibration",
    "8",
    "--workers",
    "1",
    "train.epochs=1",
    "train.image_size=64",
    "train.batch_size=8",
    "train.num_workers=0",
    "crop.size=96",
]


@pytest.mark.slow
def test_identify_reproduces_the_quality_benchmarks_closed_top1(
    catalogue: Path, tmp_path: Path
) -> None:
    args = ["--data", str(catalogue), *TINY]
    skipped, package, _ = bench_identify.nyala_agreement(tmp_path / "q", tmp_path, False, args)
    assert package is None and "skipped" in skipped
    figures, package, photo = bench_identify.nyala_agreement(tmp_path / "q", tmp_path, True, args)
    assert package.is_file() and photo.is_file()
    assert figures["queries"] > 0 and figures["cam_box_mismatches"] == 0
    assert figures["max_query_embedding_1_minus_cos"] < 1e-5
    exact = figures["float32"]
    assert exact["top1_agreement"] == 1.0 and exact["max_abs_score_diff"] < 1e-5
    assert exact["identify_top1"] == figures["benchmark_top1"]
    assert figures["float16"]["max_abs_score_diff"] < 5e-3
    local = figures["local"]  # the same queries against a package with keypoints
    assert local["fusion"]["source"] == "leave-one-out" and local["fusion"]["rows"] > 0
    assert 0 <= local["known_and_right"] <= local["identify_top1"] <= local["identify_top5"] <= 1
    assert local["package_bytes"] > package.stat().st_size
