"""A tiny synthetic competition, cropped once per session, for the training tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from wildid import pipeline
from wildid.config import Config, load_config
from wildid.crop.boxes import CropSet
from wildid.synth.render import SynthSpec, synthesize

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Tiny:
    root: Path
    crops: CropSet
    split: pd.DataFrame

    def config(self, working: Path, *overrides: str) -> Config:
        """configs/mini.yaml shrunk to seconds: 48 px, batch 8, no loader workers, one
        thread (two threads on two shared cores wait on each other at every small op)."""
        base = [
            f"data={self.root}",
            f"working={working}",
            "crop.size=64",
            "train.image_size=48",
            "train.batch_size=8",
            "train.epochs=1",
            "train.num_workers=0",
            "train.warmup_epochs=0.5",
            "embed.batch_size=32",
            "train.threads=1",
        ]
        return load_config(ROOT / "configs" / "mini.yaml", [*base, *overrides])


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("tiny") / "competition"
    synthesize(root, SynthSpec(individuals=20, size=96, seed=0), progress=False)
    working = root.parent / "working"
    probe = Tiny(root, None, None).config(working)  # type: ignore[arg-type]
    competition, split = pipeline.prepare(probe)
    crops = pipeline.crop(probe, competition, progress=False)
    return Tiny(root, crops, split)


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """train.threads sets torch's process-wide thread count; give the next test its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
