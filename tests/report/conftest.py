"""Two tiny runs for the report tests, made once per session.

`a` trains one epoch at 48 px (its report is written by `pipeline.run`, as `wildid run`
writes it); `b` reuses a's model (model.checkpoint: nothing trains) with a fixed
new_individual threshold, so the two differ in two settings and in their open-set figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from wildid import pipeline
from wildid.config import Config
from wildid.layout import RunLayout
from wildid.pipeline import RunResult

SETTINGS = ["train.image_size=48", "crop.size=64", "train.batch_size=8", "embed.batch_size=32"]


@dataclass(frozen=True)
class Run:
    config: Config
    result: RunResult

    @property
    def layout(self) -> RunLayout:
        return RunLayout.of(self.config)


@dataclass(frozen=True)
class Runs:
    a: Run
    b: Run
    working: Path


@pytest.fixture(scope="session")
def runs(make_config, tmp_path_factory: pytest.TempPathFactory) -> Runs:  # noqa: ANN001
    out = tmp_path_factory.mktemp("report")
    a = make_config(out, "name=tiny-a", *SETTINGS)
    result_a = pipeline.run(a, progress=False)
    b = make_config(
        out,
        "name=tiny-b",
        *SETTINGS,
        f"model.checkpoint={RunLayout.of(a).checkpoint(0)}",
        "retrieval.threshold=0.6",
    )
    result_b = pipeline.run(b, progress=False)
    return Runs(Run(a, result_a), Run(b, result_b), out / "working")
