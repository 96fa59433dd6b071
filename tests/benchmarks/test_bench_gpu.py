"""bench_gpu's CPU-sized mode end to end (every stage a GPU lease runs, tiny), so a lease is
never spent on a broken script; and its out-of-memory retry."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_gpu  # noqa: E402  (a broken benchmark must fail, not skip)


@pytest.mark.slow
def test_cpu_mode_runs_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    path = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--cpu",
         "--work", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text())["stages"] == figures["stages"]  # the file is complete
    table = out.with_suffix(".md").read_text()  # the README's rows, one per run
    assert all(f"| {b} (as test_" in table for b in bench_gpu.BACKBONES) and "- ddp (gloo" in table
    assert figures["environment"]["mode"] == "cpu"
    stages = figures["stages"]
    assert set(stages) == {"data", "train", "embed", "retrieval", "ddp", "headroom"}
    assert all(stages[s]["status"] == "ok" for s in ("data", "train", "embed", "retrieval", "ddp"))
    assert stages["headroom"]["status"] == "skipped"

    runs = stages["train"]["runs"]
    planned = {(b, p) for b in bench_gpu.BACKBONES for p in bench_gpu.CPU_MODE.precisions}
    assert {(r["backbone"], r["precision"]) for r in runs} == planned
    for run in runs:
        assert run["status"] == "ok" and run["images_per_s"] > 0 and run["steps"] > 0
        assert all(math.isfinite(v) for v in run["losses"]) and run["loss_finite"]
        assert not run["warmup_included"] and run["num_workers"] > 0  # the GPU's loader path
        assert run["channels_last"] and run["oom_at_batch"] == []

    embedded = stages["embed"]["runs"]
    assert [r["backbone"] for r in embedded] == list(bench_gpu.BACKBONES)
    assert all(r["fp32_images_per_s"] > 0 and r["bf16_images_per_s"] > 0 for r in embedded)
    assert all(r["bf16_min_cosine_to_fp32"] > 0.9 for r in embedded)

    search = stages["retrieval"]
    assert search["matches_reference"] and search["reference_queries"] == search["queries"]

    ddp = stages["ddp"]
    assert ddp["completed"] and ddp["backend"] == "gloo" and math.isfinite(ddp["loss"])


def test_out_of_memory_is_retried_at_half_the_batch() -> None:
    tried = []

    def run(batch: int) -> dict:
        tried.append(batch)
        if batch > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return {"batch": batch}

    assert bench_gpu.with_halving(run, 16) == {"batch": 4, "oom_at_batch": [16, 8]}
    assert tried == [16, 8, 4]


def test_other_errors_and_the_smallest_batch_are_not_retried() -> None:
    def broken(batch: int) -> dict:
        raise ValueError("not a memory problem")

    def never_fits(batch: int) -> dict:
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(ValueError):
        bench_gpu.with_halving(broken, 16)
    with pytest.raises(RuntimeError, match="out of memory"):
        bench_gpu.with_halving(never_fits, 4)


def test_a_failing_stage_is_recorded_and_the_next_runs(tmp_path: Path) -> None:
    bench = bench_gpu.Bench(60.0, tmp_path / "partial.json", {"mode": "test"})

    def fails(deadline: float) -> dict:
        raise OSError("disk gone")

    assert bench.stage("first", 0.5, fails)["error"] == "OSError: disk gone"
    assert bench.stage("second", 0.5, lambda deadline: {"x": 1})["status"] == "ok"
    bench.budget_s = 0.0
    assert bench.stage("third", 0.5, lambda deadline: {})["status"] == "skipped"
    saved = json.loads((tmp_path / "partial.json").read_text())
    assert [saved["stages"][s]["status"] for s in ("first", "second", "third")] == [
        "error",
        "ok",
        "skipped",
    ]


def test_a_dead_loader_worker_is_retried_once_without_workers() -> None:
    tried = []

    def run(workers: int | None) -> dict:
        tried.append(workers)
        if workers is None:
            raise RuntimeError("DataLoader worker (pid 123) is killed by signal: Bus error.")
        return {"ok": True}

    result = bench_gpu.with_fallback(run)
    assert tried == [None, 0] and result["ok"] and "DataLoader" in result["loader_fallback"]

    def broken(workers: int | None) -> dict:
        tried.append(workers)
        raise ValueError("not a loader problem")

    tried.clear()
    with pytest.raises(ValueError):
        bench_gpu.with_fallback(broken)
    assert tried == [None]


@pytest.mark.parametrize("backbone", bench_gpu.BACKBONES)
def test_the_gpu_mode_runs_each_config_as_configured(backbone: str, tmp_path: Path) -> None:
    from wildid.config import load_config

    own = load_config(bench_gpu.CONFIGS / f"{backbone}.yaml")
    ran = bench_gpu.config_for(backbone, bench_gpu.GPU_MODE, tmp_path)
    assert ran.model.backbone == backbone and ran.model.pretrained == "none"
    assert ran.train.device == "cuda" and ran.train.folds == 1
    for section, key in [("train", "image_size"), ("train", "batch_size"), ("train", "accumulate"),
                         ("train", "num_workers"), ("train", "channels_last"), ("crop", "size"),
                         ("embed", "batch_size"), ("train", "ema_decay")]:  # fmt: skip
        assert getattr(getattr(ran, section), key) == getattr(getattr(own, section), key), key


def test_a_stage_leaves_the_later_stages_their_share() -> None:
    budget, kept = 100.0, 0.6
    bench = bench_gpu.Bench(budget, None, {})
    allowed = []

    def note(deadline: float) -> dict:
        allowed.append(deadline - time.perf_counter())
        return {}

    bench.stage("early", 0.1, note, reserved=kept)
    assert (1 - kept) * budget - 1 < allowed[0] <= (1 - kept) * budget
    # what is left but the later shares is below MIN_SHARE of this stage's own: not started
    share, kept = 0.5, 1 - 0.4 * bench_gpu.MIN_SHARE
    assert bench.stage("late", share, note, reserved=kept)["status"] == "skipped"
    assert len(allowed) == 1
