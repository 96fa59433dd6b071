"""A tiny synthetic competition and a detector overfitted on it, shared by the detect tests.

The detector trains once per session on ~24 photos at 128 px (20-45 s on two cores). It
checks plumbing (labels, coordinates, crops, caching), not accuracy, so it is evaluated on
the photos it was trained on. Training runs with every socket call refused, so a test can
assert that ultralytics made no network attempt.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from wildid.config import Config, load_config
from wildid.crop.detector import Detector
from wildid.crop.detector import train as train_detector
from wildid.data.competition import Competition, load_competition
from wildid.synth.render import SynthSpec, synthesize

TINY_DETECT = [
    "detect.imgsz=128",
    "detect.epochs=30",
    "detect.batch=4",
    "detect.workers=0",
    "detect.val_fraction=0.1",
    # Overfit a few photos fast: no mosaic or scale jitter, an optimizer step per batch.
    "detect.train_args={mosaic: 0.0, scale: 0.0, nbs: 4, warmup_epochs: 0, val: false, "
    "optimizer: AdamW, lr0: 0.003}",
]


@dataclass(frozen=True)
class TinyRun:
    config: Config
    competition: Competition
    detector: Detector
    network_calls: list


def _tiny_config(root: Path, working: Path, *extra: str) -> Config:
    return load_config(
        None,
        [
            f"data={root}",
            f"working={working}",
            "crop.size=128",
            "crop.kinds=[fullbody, backfin]",
            "crop.source=detector",
            # The tiny detector misses most back fins: accepted here, where plumbing is
            # tested (test_crop checks the refusal without it).
            "crop.allow_fallback=true",
            *TINY_DETECT,
            *extra,
        ],
    )


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., Config]:
    """Config for the tiny set: tiny_config(root, working, *overrides)."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_competition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-whales")
    synthesize(root, SynthSpec(individuals=6, size=128, seed=3), progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_competition: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    config = _tiny_config(tiny_competition, tmp_path_factory.mktemp("working"))
    competition = load_competition(tiny_competition)
    calls: list = []

    def refuse(*args, **kwargs):
        calls.append(args[:2])
        raise OSError("tests: network disabled")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", refuse)
        patch.setattr(socket, "create_connection", refuse)
        detector = train_detector(config, competition, progress=False)
    return TinyRun(config, competition, detector, calls)
