"""The reliability table: bad inputs and faults through the command line, each ending in one
line naming the problem, exit status 2, and the outputs already there left as they were.

Each case starts from the same state: a prepared run (`wildid prepare`: run.json, split,
folds, config) and an earlier submission, copied per case. The working and submissions
folders are hashed before and after the failing command (the run lock's pid file aside);
"intact" cases must leave them byte for byte unchanged. Kills at each stage are in
test_kill.py.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wildid import faults
from wildid.cli import app
from wildid.train import engine

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "configs" / "mini.yaml"
FAST = [
    "train.epochs=1",
    "train.image_size=48",
    "crop.size=64",
    "train.batch_size=8",
    "baseline=false",
    "train.num_workers=0",
    "train.threads=1",
    "embed.flip_tta=false",
]


@dataclass
class Ctx:
    root: Path
    data: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def working(self) -> Path:
        return self.root / "working"

    @property
    def submissions(self) -> Path:
        return self.root / "submissions"

    def overrides(self, data: Path | None = None) -> list[str]:
        return [
            f"data={data or self.data}",
            f"working={self.working}",
            f"submissions={self.submissions}",
            *FAST,
        ]


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "input" (a bad input) or "fault" (of the machine or of concurrency)
    command: Callable[[Ctx], list[str]]  # may also set the fault up
    fragment: str  # in the one-line message
    status: int = 2
    # working/ and submissions/ unchanged byte for byte; else no temporary, no checkpoint
    # and the earlier submission unchanged
    intact: bool = True


def _config_file(ctx: Ctx, text: str) -> Path:
    path = ctx.root / "my.yaml"
    path.write_text(text)
    return path


def _run(ctx: Ctx, *extra: str, config: Path = MINI, data: Path | None = None) -> list[str]:
    return ["run", str(config), *ctx.overrides(data), *extra]


def _bad_csv(ctx: Ctx, text: str) -> Path:
    data = ctx.root / "bad-data"
    shutil.copytree(ctx.data, data)
    (data / "train.csv").write_text(text)
    return data


def _read_only_submissions(ctx: Ctx) -> list[str]:
    real = faults.tempfile.mkstemp

    def mkstemp(*args: object, dir: str | Path, **kwargs: object):  # noqa: A002, ANN202
        if Path(dir) == ctx.submissions:  # root ignores chmod: refuse at the file creation
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    ctx.monkeypatch.setattr(faults.tempfile, "mkstemp", mkstemp)
    return _run(ctx)


def _full_disk(ctx: Ctx) -> list[str]:
    free = lambda _: faults.shutil._ntuple_diskusage(10**12, 10**12 - 5 * 10**6, 5 * 10**6)  # noqa: E731
    ctx.monkeypatch.setattr(faults.shutil, "disk_usage", free)
    return _run(ctx)


def _disk_full_at_checkpoint(ctx: Ctx) -> list[str]:
    real = torch.save
    ctx.monkeypatch.setattr(engine.torch, "save", lambda state, _: real(state, "/dev/full"))
    return ["train", str(MINI), *ctx.overrides()]


def _second_run(ctx: Ctx) -> list[str]:
    code = (
        "import sys; from wildid.faults import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(ctx.working / "mini")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    ctx.holder = holder  # type: ignore[attr-defined]  (killed by the test)
    return _run(ctx)


def _changed_setting(ctx: Ctx) -> list[str]:
    (ctx.working / "mini" / "models").mkdir()  # the run has trained (its models exist)
    return _run(ctx, "train.lr=0.5")


CASES = [
    # bad inputs
    Case(
        "override with a mistyped key",
        "input",
        lambda c: _run(c, "trian.epochs=2"),
        "command line override trian.epochs=2: unknown key 'trian' (did you mean 'train'?)",
    ),
    Case(
        "override with a value of the wrong type",
        "input",
        lambda c: _run(c, "train.epochs=many"),
        "command line override train.epochs=many: train.epochs: Input should be",
    ),
    Case(
        "override without '='",
        "input",
        lambda c: _run(c, "train.epochs"),
        "command line override 'train.epochs': expected key=value",
    ),
    Case(
        "config file with a mistyped key",
        "input",
        lambda c: ["run", str(_config_file(c, f"_base_: {MINI}\ntrain: {{ephocs: 2}}\n"))],
        "my.yaml: unknown key 'train.ephocs' (did you mean 'epochs'?)",
    ),
    Case(
        "config whose _base_ is missing",
        "input",
        lambda c: ["run", str(_config_file(c, "_base_: gone.yaml\n"))],
        "gone.yaml: config file not found (the `_base_` of ",
    ),
    Case(
        "config that is not YAML",
        "input",
        lambda c: ["run", str(_config_file(c, "train: {epochs: [\n"))],
        "my.yaml: not valid YAML",
    ),
    Case("config that does not exist", "input", lambda c: ["run", "nope.yaml"], "nope.yaml"),
    Case(
        "data folder that does not exist",
        "input",
        lambda c: _run(c, data=c.root / "nowhere"),
        "nowhere",
    ),
    Case(
        "train.csv without individual_id",
        "input",
        lambda c: _run(c, data=_bad_csv(c, "image,species\na.jpg,x\n")),
        "individual_id",
    ),
    Case(
        "changed training setting under the same run name",
        "input",
        _changed_setting,
        "train.lr 0.001 -> 0.5",
    ),
    Case(
        "submission naming a photo not in the test set",
        "input",
        lambda c: [
            "validate",
            str(_config_file(c, "image,predictions\nnot-a-photo.jpg,new_individual\n")),
            "--data",
            str(c.data),
        ],
        "not-a-photo.jpg",
    ),
    Case(
        "score against a solution that does not exist",
        "input",
        lambda c: ["score", str(c.submissions / "mini.csv"), str(c.root / "none.csv")],
        "none.csv",
    ),
    # faults
    Case(
        "read-only submissions folder (found before training)",
        "fault",
        _read_only_submissions,
        "submissions/.wildid-write-test: cannot write (read-only file system)",
    ),
    Case(
        "disk nearly full before the long stages",
        "fault",
        _full_disk,
        "only 5.0 MB (5000000 bytes) free, a run needs at least",
    ),
    Case(
        "disk full while saving a checkpoint",
        "fault",
        _disk_full_at_checkpoint,
        "models/fold0/last.pt: no space left on device: writing it needs about",
        intact=False,  # training starts (config.yaml is written); no checkpoint, no temporary
    ),
    Case("two runs of one config at once", "fault", _second_run, ") is running this run"),
]


def _digest(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file under the folders (the lock's pid file aside)."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != faults.LOCK_NAME
    }


@pytest.fixture(scope="module")
def prepared(tiny_comp: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """working/ and submissions/ of a prepared run with an earlier submission in place."""
    root = tmp_path_factory.mktemp("prepared")
    ctx = Ctx(root, tiny_comp, pytest.MonkeyPatch())
    result = CliRunner().invoke(app, ["prepare", str(MINI), *ctx.overrides()])
    assert result.exit_code == 0, result.output
    ctx.submissions.mkdir(exist_ok=True)  # the preflight made it
    (ctx.submissions / "mini.csv").write_text("image,predictions\nearlier,result\n")
    return root


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(
    case: Case,
    prepared: Path,
    tiny_comp: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "case"
    shutil.copytree(prepared, root, symlinks=True)
    ctx = Ctx(root, tiny_comp, monkeypatch)
    args = case.command(ctx)
    before = _digest(ctx.working, ctx.submissions)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        holder = getattr(ctx, "holder", None)
        if holder is not None:
            holder.kill()
            holder.wait()
    assert result.exit_code == case.status, result.output
    last = result.output.strip().splitlines()[-1]  # (after progress bars on the same line)
    assert "error: " in last, result.output
    message = last[last.index("error: ") :]
    assert case.fragment in message, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    after = _digest(ctx.working, ctx.submissions)
    if case.intact:
        assert after == before
    else:  # the run went on (prepare rewrote its records); nothing half-written is left
        earlier = str(ctx.submissions / "mini.csv")
        assert after[earlier] == before[earlier]
        temporaries = [p for p in after if faults.is_temporary(Path(p))]
        assert temporaries == [] and not any(p.endswith(".pt") for p in after)
