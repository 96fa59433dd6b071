"""A tiny trained run (whole-photo crops, one epoch at 48 px) and its package, once a session.

Whole-photo crops make a new photo's crop identical to its gallery crop, so a train photo
identified against its own package must come back as its own individual at rank 1.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from wildid import pipeline
from wildid.config import Config
from wildid.gallery.package import build_package, open_package

RUN_OVERRIDES = [
    "name=tiny-gallery",
    "crop.source=whole",
    "crop.kinds=[whole]",
    "crop.size=64",
    "train.image_size=48",
    "train.batch_size=8",
    "train.threads=1",
    "train.warmup_epochs=0.5",
    "embed.batch_size=32",
]


@dataclass(frozen=True)
class Built:
    config: Config
    run: Path
    archive: Path
    comp: Path

    def train_photo(self, row: int = 0) -> tuple[Path, str]:
        """(path, individual_id) of a train photo of the competition."""
        train = pd.read_csv(self.comp / "train.csv")
        return self.comp / "train_images" / train["image"][row], str(train["individual_id"][row])

    def test_photos(self) -> list[Path]:
        return sorted((self.comp / "test_images").iterdir())


@pytest.fixture(scope="session")
def built(make_config, tiny_comp: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("gallery")
    config = make_config(out, *RUN_OVERRIDES)
    pipeline.run(config, progress=False)
    run = Path(config.working) / config.name
    archive = build_package(run, out / "tiny.zip")
    return Built(config, run, archive, tiny_comp)


@pytest.fixture
def package(built: Built, tmp_path: Path):
    """A private unpacking of the session's package (tests may enroll into it)."""
    archive = Path(shutil.copy(built.archive, tmp_path / "tiny.zip"))
    return open_package(archive)
