"""`fusion.local`: the run's `fused` method (global + local, calibrated on validation)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from wildid import pipeline
from wildid.config import ConfigError, load_config
from wildid.data.competition import load_competition
from wildid.errors import WildidError
from wildid.evaluation.submission import validate_against_competition
from wildid.layout import RunLayout
from wildid.pipeline.fusion import FusionError, local_config

pytestmark = pytest.mark.slow


def test_fused_method_is_calibrated_on_validation_and_writes_its_submission(
    make_config, tmp_path: Path
) -> None:  # noqa: ANN001
    config = make_config(
        tmp_path,
        "fusion.local=true",
        "fusion.shortlist=8",
        "fusion.workers=1",
        "fusion.features=200",
        "retrieval.operating_point=gmean",
    )
    result = pipeline.run(config, progress=False)
    fused = result.fused
    assert fused is not None and fused.name == "fused" and "fuse" in result.seconds
    layout = RunLayout.of(config)
    assert fused.submission == layout.submission("fused")
    validate_against_competition(fused.submission, load_competition(config.data))
    metrics = json.loads((layout.method("fused") / "metrics.json").read_text())
    assert set(metrics["calibrations"]) == {"global", "local"}
    assert all(c["method"] == "isotonic" for c in metrics["calibrations"].values())
    points = metrics["operating_points"]
    assert metrics["threshold"] == points["gmean"]  # retrieval.operating_point=gmean
    assert 0.0 <= metrics["test_map5"] <= 1.0
    pairs = list((layout.root / "fusion").glob("pairs_*.csv"))
    assert len(pairs) == 1 and len(pd.read_csv(pairs[0])) > 0
    # the trained method is untouched by fusion
    assert json.loads((layout.root / "metrics.json").read_text())["name"] == "trained"


def test_fusion_without_validation_queries_is_refused_before_any_work(
    make_config, tmp_path: Path
) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="val_fraction"):
        make_config(tmp_path, "fusion.local=true", "train.val_fraction=0.0")
    assert not (tmp_path / "working").exists()
    assert issubclass(FusionError, WildidError)


def test_the_fusion_section_sets_the_local_matcher() -> None:
    """`fusion.upright`, `size` and `mask` reach the keypoint extractor."""
    default = local_config(load_config(None))
    assert not default.upright and default.size == 256
    local = local_config(
        load_config(None, ["fusion.upright=true", "fusion.size=192", "fusion.mask=box"])
    )
    assert local.upright and local.size == 192 and local.mask == "box"
