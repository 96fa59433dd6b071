"""Smoke test of the quality benchmark's whole code path on a tiny synthetic catalogue.

The real benchmark (`make bench-quality`) needs ../shared/datasets/nyala and about an hour;
this runs every step (import, CAM boxes, baselines, SIFT, a one-epoch training, fusion,
both protocols, the report) on a dozen textured "animals" in a few seconds of compute.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from wildid.evaluation.protocols import (
    calibration,
    calibration_images,
    import_protocols,
    load_protocol,
    training_exclusion,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_quality  # noqa: E402  (a broken benchmark must fail, not skip)


def test_bench_quality_runs_end_to_end(
    catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    figures = bench_quality.main(
        [
            "--data",
            str(catalogue),
            "--out",
            str(out),
            "--calibration",
            "6",
            "--calibration-new",
            "1",
            "--shortlist",
            "6",
            "--workers",
            "1",
            "--no-progress",
            "--flank-variants",
            "--centred",
            "train.epochs=1",
            "train.image_size=64",
            "train.batch_size=4",
            "train.num_workers=0",
            "crop.size=96",
        ]
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == figures
    methods = {
        "imagenet_mobilenetv2_100",
        "imagenet_efficientnet_lite0",
        "local",
        "trained",
        "trained+local",
        "trained flip-TTA",
        "trained all-flanks",
        "trained+local flip-TTA",
        "trained+centred",
        "trained+local+centred",
    }
    methods |= {f"{m} [sighting]" for m in methods}  # --level both is the default
    assert set(figures["closed"]) == methods and set(figures["open"]) == methods
    for scores in figures["closed"].values():
        assert 0.0 <= scores["top1"] <= scores["map5"] + 1e-9 <= 1.0 + 1e-9
        assert scores["s"] >= 0
    for scores in figures["open"].values():
        assert 0.0 <= scores["baus"] <= 1.0 and 0.0 <= scores["all_new_map5"] <= 1.0
        # the query-labelled threshold is the best gmean any threshold on this ranking gets
        assert scores["oracle_gmean"] >= scores["gmean"] - 1e-9
        assert scores["oracle_gmean"] >= scores["gmean_at_map5"] - 1e-9
    table = (out / "results.md").read_text()
    assert "| trained+local |" in table and "Command:" in table and "| gmean |" in table
    assert "| oracle |" in table
    assert (out / "data" / "closed" / "boxes.csv").is_file()
    for protocol in ("closed", "open"):
        assert (out / f"matches_{protocol}.png").stat().st_size > 0
    details = json.loads((out / "results.json").read_text())["details"]
    fused = details["open"]["trained+local"]
    assert set(fused["calibrations"]) == {"trained", "local"}
    assert fused["calibrations"]["trained"]["method"] == "isotonic"
    assert set(fused["photo"]["calibration"]) == {"map5", "gmean"}
    assert details["closed"]["trained+local"]["calibration_source"] == (
        "open run's held-out calibration rows"
    )
    assert details["open"]["trained"]["calibration_source"] == "own calibration rows"
    _check_training_splits(out, 6, 1)
    # a re-run reuses every model, feature and pair: nothing trains or matches again
    again = bench_quality.main(
        [
            "--data",
            str(catalogue),
            "--out",
            str(out),
            "--calibration",
            "6",
            "--calibration-new",
            "1",
            "--shortlist",
            "6",
            "--workers",
            "1",
            "--no-progress",
            "--level",
            "photo",
            "--methods",
            "trained,trained+local",
            "train.epochs=1",
            "train.image_size=64",
            "train.batch_size=4",
            "train.num_workers=0",
            "crop.size=96",
        ]
    )
    assert set(again["closed"]) == {"trained", "trained+local"}
    assert again["closed"]["trained+local"]["top1"] == figures["closed"]["trained+local"]["top1"]
    seconds = json.loads((out / "results.json").read_text())["seconds"]
    assert seconds["train closed"] < 5 and seconds["train open"] < 5


def _split_images(out: Path, protocol: str) -> set[str]:
    (run,) = (out / "pipeline").glob(f"quality-{protocol}-*")
    return set(pd.read_csv(run / "split.csv", dtype=str)["image"])


def _check_training_splits(out: Path, n_calibration: int, min_new: int) -> None:
    """The run's trained splits: open less its calibration photos, closed whole."""
    protocols = {n: load_protocol(out / "data" / n, n) for n in ("closed", "open")}
    open_gallery = protocols["open"].gallery
    cal = calibration(open_gallery, n_calibration, 0, min_new)
    held_out = set(calibration_images(open_gallery, cal))
    assert held_out and _split_images(out, "open") == set(open_gallery["image"]) - held_out
    assert _split_images(out, "closed") == set(protocols["closed"].gallery["image"])


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(
        config=str(ROOT / "configs" / "nyala.yaml"),
        overrides=[],
        crop="cam",
        seed=0,
        flank_classes=False,
        **kw,
    )


def test_training_split_drops_open_calibration_sightings_only(
    catalogue: Path, tmp_path: Path
) -> None:
    protocols = import_protocols(catalogue, tmp_path / "data", r"^(\d+)_")
    names = set()
    for protocol in protocols.values():
        cal = calibration(protocol.gallery, 4, 0)
        exclude = training_exclusion(protocol, cal)
        config = bench_quality.pipeline_config(protocol, _args(), tmp_path, exclude)
        competition, split = bench_quality.training_split(config, protocol, exclude, False)
        gallery = set(protocol.gallery["image"])
        assert set(competition.train["image"]) == gallery  # still embedded as gallery
        if protocol.name == "closed":
            assert not exclude and set(split["image"]) == gallery
        else:
            sightings = set(
                zip(
                    protocol.gallery["individual_id"].iloc[cal.rows],
                    protocol.gallery["group"].iloc[cal.rows],
                    strict=True,
                )
            )
            trained = protocol.gallery[protocol.gallery["image"].isin(split["image"])]
            assert len(exclude) > len(cal.rows)  # near duplicates (the other flank) too
            assert not sightings & set(zip(trained["individual_id"], trained["group"], strict=True))
            assert set(split["image"]) == gallery - set(exclude)
        names.add(config.name)
        # another exclusion, another run folder: nothing resumes a model trained otherwise
        other = bench_quality.pipeline_config(protocol, _args(), tmp_path, exclude[:-1])
        assert (other.name != config.name) == bool(exclude)
    assert len(names) == 2
