"""Two CPU processes on gloo, launched the way a user would: `wildid train --nproc 2`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from wildid.layout import RunLayout

if TYPE_CHECKING:
    from conftest import Tiny


def test_two_processes_share_each_epoch(tiny: Tiny, tmp_path: Path) -> None:
    working = tmp_path / "working"
    config = tiny.config(working)
    overrides = [
        f"data={tiny.root}",
        f"working={working}",
        "crop.size=64",
        "train.image_size=48",
        "train.batch_size=8",
        "train.epochs=1",
        "train.num_workers=0",
        "train.threads=1",
        "embed.batch_size=32",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "wildid.cli",
            "train",
            str(Path(__file__).parents[2] / "configs" / "mini.yaml"),
            "--nproc",
            "2",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = RunLayout.of(config).root / "models" / "fold0"
    assert "best checkpoint" in done.stdout
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 1 and history["val_map5"].notna().all()
    last = torch.load(out / "last.pt", weights_only=True)
    n_train = int((tiny.split["role"] == "train").sum())
    # Each optimizer step consumed 2 x 8 images: the processes split the epoch.
    assert last["step"] == n_train // 16
