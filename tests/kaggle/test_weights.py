"""A trained run's checkpoints as a Kaggle dataset folder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wildid.cli import app
from wildid.kaggle.weights import WeightsDatasetError, weights_dataset


def _run(root):
    run = root / "working" / "mini"
    for k in (0, 1):
        fold = run / "models" / f"fold{k}"
        fold.mkdir(parents=True)
        (fold / "best.pt").write_bytes(b"weights %d" % k)
        (fold / "last.pt").write_bytes(b"not copied")
        (fold / "history.csv").write_text("epoch,loss\n0,1.0\n")
    (run / "config.yaml").write_text("name: mini\n")
    return run


def test_layout_readme_and_metadata(tmp_path) -> None:
    out = tmp_path / "ds"
    made = weights_dataset(_run(tmp_path), out, "alice")
    assert made.slug == "alice/wildid-mini-weights"
    assert (out / "models/fold1/best.pt").read_bytes() == b"weights 1"
    assert (out / "models/fold0/history.csv").is_file() and (out / "config.yaml").is_file()
    assert not (out / "models/fold0/last.pt").exists() and not (out / "run.json").exists()
    readme = (out / "README.md").read_text()
    assert "model.checkpoint=/kaggle/input/wildid-mini-weights/models/fold0/best.pt" in readme
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta["id"] == made.slug and "key" not in json.dumps(meta)


def test_run_without_checkpoints_and_the_cli(tmp_path) -> None:
    with pytest.raises(WeightsDatasetError, match="no models/fold"):
        weights_dataset(tmp_path, tmp_path / "out", "alice")
    run = _run(tmp_path)
    result = CliRunner().invoke(
        app, ["kaggle", "weights", str(run), str(tmp_path / "o"), "--user", "alice"]
    )
    assert result.exit_code == 0, result.output
    assert "alice/wildid-mini-weights" in result.output
