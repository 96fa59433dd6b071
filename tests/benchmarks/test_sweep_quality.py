"""The settings sweep on the quality benchmark's closed set: rows, resume, bad variants,
and that it runs as a script (`flank_classes`, which it can switch on, is tested with the
protocols)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import wildid
from wildid.config import load_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import sweep_quality  # noqa: E402  (a broken benchmark must fail, not skip)

FAST = ["train.image_size=64", "train.batch_size=8", "train.num_workers=0", "crop.size=96"]


def _variants(tmp_path: Path) -> Path:
    path = tmp_path / "variants.yaml"
    path.write_text(
        "- {name: one_epoch, overrides: [train.epochs=1]}\n"
        "- {name: two_epochs_flank, overrides: [train.epochs=2], flank_classes: true}\n"
        "- {name: broken, overrides: [train.epochs=-1]}\n"
    )
    return path


def test_sweep_writes_a_row_per_variant_and_resumes(
    catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sweep"
    args = [
        "--variants",
        str(_variants(tmp_path)),
        "--data",
        str(catalogue),
        "--crop",
        "whole",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        *FAST,
    ]
    rows = sweep_quality.main(args)
    # the broken variant (epochs < 0 fails the config schema) is reported and skipped
    assert [r["name"] for r in rows] == ["one_epoch", "two_epochs_flank"]
    for row in rows:
        assert 0.0 <= row["top1"] <= row["map5"] + 1e-9 <= 1.0 + 1e-9
        assert row["device"] == "cpu" and row["train_s"] > 0
    # cost: the variant's epochs x pixels over configs/nyala.yaml's; `--set` holds
    # settings that change speed, not results, and is not counted
    epochs = load_config(ROOT / "configs" / "nyala.yaml").train.epochs
    assert [r["cost"] for r in rows] == [
        pytest.approx(1 / epochs, abs=0.01),
        pytest.approx(2 / epochs, abs=0.01),
    ]
    assert rows[1]["flank_classes"] and not rows[0]["flank_classes"]
    logged = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    assert logged == rows

    # a re-run trains nothing: every finished variant is read back from sweep.jsonl
    def no_training(*_args: object) -> dict:
        raise AssertionError("a finished variant was run again")

    monkeypatch.setattr(sweep_quality, "run_variant", no_training)
    assert sweep_quality.main([*args, "--only", "one_epoch"]) == rows[:1]


def test_an_edited_variant_runs_again() -> None:
    row = {"name": "a", "overrides": ["train.epochs=1"], "flank_classes": False}
    done = {"a": {**row, "baseline": "b1"}}
    assert sweep_quality._finished({"name": "a", "overrides": ["train.epochs=1"]}, done, "b1")
    assert not sweep_quality._finished({"name": "a", "overrides": ["train.epochs=2"]}, done, "b1")
    assert not sweep_quality._finished(
        {"name": "a", "overrides": ["train.epochs=1"], "flank_classes": True}, done, "b1"
    )
    assert not sweep_quality._finished({"name": "b"}, done, "b1")
    # the same variant on another baseline (an edited config), or a row from before
    # baselines were recorded, is not finished
    assert not sweep_quality._finished({"name": "a", "overrides": ["train.epochs=1"]}, done, "b2")
    assert not sweep_quality._finished(
        {"name": "a", "overrides": ["train.epochs=1"]}, {"a": row}, "b1"
    )


def test_the_baseline_follows_the_config_and_data_but_not_speed_settings(tmp_path: Path) -> None:
    nyala = ROOT / "configs" / "nyala.yaml"
    edited = tmp_path / "edited.yaml"
    edited.write_text(f"_base_: {nyala}\ntrain: {{lr: 0.002}}\n")

    def base(*argv: str) -> str:
        return sweep_quality.baseline(sweep_quality.parse_args(["--variants", "v.yaml", *argv]))

    assert base() == base("--set", "train.num_workers=12")
    assert base() != base("--config", str(edited))
    assert base() != base("--seed", "1")
    assert base() != base("--data", str(tmp_path))


def test_the_sweep_runs_as_a_script_without_editing_sys_path() -> None:
    """`python benchmarks/sweep_quality.py` finds bench_quality next to it (the script's
    folder is on the import path) and the package on PYTHONPATH; nothing else."""
    env = {**os.environ, "PYTHONPATH": str(Path(wildid.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sweep_quality.py"), "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--variants" in done.stdout


def test_a_benchmark_variant_runs_bench_quality_in_the_shared_folder_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variant with `bench:` arguments is one bench_quality run in --bench-out (so the
    models `make bench-quality` left there are reused), tagged with its name; its row keeps
    the figures of the --bench-methods rows and their variants, and a re-run skips it."""
    calls: list[list[str]] = []
    row = {"top1": 0.3, "map5": 0.4, "s": 1.0}
    open_row = {"map5": 0.6, "baks": 0.3, "baus": 0.5, "gmean": 0.39, "s": 1.0}
    labels = ["trained", "trained+local", "trained+local [sighting]", "imagenet_x", "local"]

    def fake_main(argv: list[str]) -> dict:
        calls.append(argv)
        return {"closed": dict.fromkeys(labels, row), "open": dict.fromkeys(labels, open_row)}

    monkeypatch.setattr(sweep_quality.bq, "main", fake_main)
    variants = tmp_path / "fusion.yaml"
    variants.write_text("- {name: box, bench: [--local-mask, box]}\n")
    args = [
        "--variants",
        str(variants),
        "--out",
        str(tmp_path / "sweep"),
        "--bench-out",
        str(tmp_path / "quality"),
        "--no-progress",
    ]
    (result,) = sweep_quality.main(args)
    argv = calls[0]
    assert argv[argv.index("--out") + 1] == str(tmp_path / "quality")
    assert argv[argv.index("--tag") + 1] == "box" and argv[-2:] == ["--local-mask", "box"]
    assert set(result["closed"]) == {"trained", "trained+local", "trained+local [sighting]"}
    assert result["open"]["trained+local"]["gmean"] == 0.39 and result["bench"][0] == "--local-mask"
    assert sweep_quality.main(args) == [result] and len(calls) == 1  # finished: not run again
    variants.write_text("- {name: box, bench: [--local-mask, grabcut]}\n")  # edited: runs
    sweep_quality.main(args)
    assert len(calls) == 2


@pytest.mark.parametrize("sweep", sorted((ROOT / "benchmarks" / "sweeps").glob("*.yaml")))
def test_every_shipped_variant_parses(sweep: Path) -> None:
    """A typo in a shipped sweep row fails here, not an hour into `make bench-sweep`."""
    import bench_quality
    import yaml

    for variant in yaml.safe_load(sweep.read_text()):
        if "bench" in variant:
            args = bench_quality.parse_args([*variant["bench"], *variant.get("overrides", [])])
            assert args.out, variant["name"]
        for override in variant.get("overrides", []):
            assert "=" in override, f"{sweep.name}: {variant['name']}: {override}"
