"""Faults below the command line: full and read-only disks, leftover temporaries, run locks.

A full disk is simulated without filling one: the write is sent to /dev/full (the kernel
answers every write with ENOSPC, as a full disk does), or os.replace raises ENOSPC. We run
as root, for whom permission bits bind nothing, so a read-only folder is simulated at the
probe (the file creation the preflight tries) as well as by chmod where that binds.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wildid import faults
from wildid.io import atomic_open, write_npy, write_text
from wildid.layout import RunLayout, release
from wildid.train import engine


def _enospc(*args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]))


def test_disk_full_at_the_replace_names_path_bytes_needed_and_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "replace", _enospc)
    with pytest.raises(faults.StorageError) as info:
        write_npy(tmp_path / "e.npy", np.zeros(1000, dtype=np.float32))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'e.npy'}: no space left on device")
    assert "(4128 bytes)" in message and "bytes) free" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # the temporary is gone


def test_disk_full_mid_write_is_caught_from_the_handle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_text(tmp_path / "t.txt", "old")
    full = pytest.raises(faults.StorageError, match=r"t\.txt: no space left")
    with full, atomic_open(target, "wb") as handle:
        handle.write(b"part")
        handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_an_input_the_block_cannot_read_keeps_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), atomic_open(tmp_path / "out.txt") as handle:
        handle.write("x")
        raise PermissionError(errno.EACCES, "Permission denied", "/elsewhere/photo.jpg")


def test_disk_full_saving_a_checkpoint_is_one_line_not_an_enforce_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save
    monkeypatch.setattr(engine.torch, "save", lambda state, _: real_save(state, "/dev/full"))
    state = {"model": {"w": torch.zeros(256, 256)}, "epoch": 1}
    trainer = SimpleNamespace(rank=0, _weights=lambda: state)
    target = tmp_path / "models" / "fold0" / "last.pt"
    with pytest.raises(faults.StorageError) as info:
        engine.Trainer.save(trainer, target, full=False)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{target}: no space left on device")
    assert "(262144 bytes)" in message and "inline_container" not in message
    assert list(target.parent.iterdir()) == []


def test_read_only_folder_fails_the_preflight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "submissions"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
    else:  # root writes through permission bits: fail the probe's file creation instead
        real = faults.tempfile.mkstemp

        def mkstemp(*args: object, dir: str | Path, **kwargs: object):  # noqa: A002, ANN202
            if Path(dir) == folder:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(faults.tempfile, "mkstemp", mkstemp)
    try:
        with pytest.raises(faults.StorageError, match=r"submissions.*: cannot write \("):
            faults.preflight([tmp_path / "working", folder])
    finally:
        folder.chmod(0o700)


def test_a_nearly_full_disk_fails_the_preflight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        faults.shutil, "disk_usage", lambda _: SimpleNamespace(total=10**9, used=0, free=1000)
    )
    with pytest.raises(faults.StorageError, match=r"only 1.0 kB \(1000 bytes\) free"):
        faults.preflight([tmp_path])


def test_a_file_where_a_folder_should_be_fails_the_preflight(tmp_path: Path) -> None:
    (tmp_path / "working").write_text("oops")
    with pytest.raises(faults.StorageError, match="working"):
        faults.preflight([tmp_path / "working" / "run"])


def test_sweep_removes_killed_writes_temporaries_only(tmp_path: Path) -> None:
    keep = [tmp_path / n for n in ("last.pt", ".lock", ".hidden", "a.csv", ".notes.txt")]
    stale = [
        tmp_path / ".last.pt.abcd1234.pt",
        tmp_path / "embeddings" / ".train.npy.k_9z0x1y.npy",
        tmp_path / ".run.json.qwertyui.json",
    ]
    for path in keep + stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    fresh = tmp_path / ".best.pt.zzzzzzzz.pt"
    fresh.write_text("a write in progress")
    os.utime(fresh, (time.time() + 60, time.time() + 60))
    assert sorted(faults.sweep(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in [*keep, fresh])


def _holder(folder: Path) -> subprocess.Popen:
    code = (
        "import sys; from wildid.faults import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(faults.__file__).parents[1])},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_refuses_naming_the_holder_and_may_go_once_it_died(
    tmp_path: Path, make_config
) -> None:  # noqa: ANN001
    config = make_config(tmp_path)
    layout = RunLayout.of(config)
    proc = _holder(layout.root)
    try:
        with pytest.raises(faults.RunLockedError) as info:
            layout.claim(config)
        assert f"(pid {proc.pid}) is running this run" in str(info.value)
        assert not layout.record.exists()  # refused before writing anything
    finally:
        proc.kill()  # SIGKILL: the kernel drops its flock
        proc.wait()
    layout.claim(config)
    layout.claim(config)  # the same process claims again: it holds the lock already
    assert layout.record.is_file()
    release(layout)


def test_claim_sweeps_the_runs_leftovers(tmp_path: Path, make_config) -> None:  # noqa: ANN001
    config = make_config(tmp_path)
    layout = RunLayout.of(config)
    left = [
        layout.fold(0) / ".last.pt.a1b2c3d4.pt",
        layout.submissions / f".{layout.name}.csv.a1b2c3d4.csv",
    ]
    other = layout.submissions / f".{layout.name}-2.csv.a1b2c3d4.csv"  # another run
    for path in [*left, other]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    layout.claim(config)
    release(layout)
    assert not any(p.exists() for p in left) and other.exists()
