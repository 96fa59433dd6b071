"""`kill -9` at each stage of `wildid run`, then a resume: the submission is byte for byte
the one an uninterrupted run writes, and no temporary file is left.

One run folder is killed four times in a row (crop, train, embed, evaluate: killer.py dies
inside an atomic write, its temporary complete but not moved into place), each restart
resuming what the previous one left; the fifth run finishes. An uninterrupted run in its
own folders is the reference. The train kill dies writing best.pt after last.pt: before
this suite, best.pt was written first, and a kill between the two left a best.pt without
last.pt, which the resume refused as "a model copied in". In-process kills of training are tested in
tests/train/test_engine.py (test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wildid import faults

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KILLS = ["crop", "train", "embed", "evaluate"]
SETTINGS = [
    "train.epochs=1",
    "train.image_size=48",
    "crop.size=64",
    "train.batch_size=8",
    "train.warmup_epochs=0.5",
    "baseline=false",
    "train.num_workers=0",
    "train.threads=1",
    "embed.flip_tta=false",
    "embed.batch_size=32",
]


def _wildid(root: Path, data: Path, kill: str | None = None) -> subprocess.CompletedProcess:
    args = [
        "run",
        str(REPO / "configs" / "mini.yaml"),
        f"data={data}",
        f"working={root / 'working'}",
        f"submissions={root / 'submissions'}",
        *SETTINGS,
    ]
    command = (
        [sys.executable, str(HERE / "killer.py"), kill]
        if kill
        else [
            sys.executable,
            "-m",
            "wildid.cli",
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, env=env)


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file() and faults.is_temporary(p)]


@pytest.fixture(scope="module")
def reference(tiny_comp: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("uninterrupted")
    done = _wildid(root, tiny_comp)
    assert done.returncode == 0, done.stderr[-3000:]
    return (root / "submissions" / "mini.csv").read_bytes()


def test_kill_at_each_stage_then_resume_gives_the_same_submission(
    reference: bytes, tiny_comp: Path, tmp_path: Path
) -> None:
    submission = tmp_path / "submissions" / "mini.csv"
    left: dict[str, list[Path]] = {}
    for stage in KILLS:
        done = _wildid(tmp_path, tiny_comp, kill=stage)
        assert done.returncode == -signal.SIGKILL, (stage, done.stderr[-3000:])
        left[stage] = _temporaries(tmp_path)
        if stage != "evaluate":
            assert not submission.exists(), stage
    # every kill died inside a write: its temporary was there until the next run swept it
    assert all(left[stage] for stage in ("train", "embed", "evaluate")), left
    done = _wildid(tmp_path, tiny_comp)
    assert done.returncode == 0, done.stderr[-3000:]
    assert submission.read_bytes() == reference
    # the run's own folders are swept; the shared crops folder only of old temporaries
    assert [p for p in _temporaries(tmp_path) if "crops" not in p.parts] == []
