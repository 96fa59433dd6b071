"""Atomic writes: a failure mid-write leaves the old file, and no temporary file behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wildid.io import atomic_open, atomic_path, write_csv, write_npy, write_text


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = write_text(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError, match="crash"), atomic_open(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failed_first_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError), atomic_path(tmp_path / "deep" / "x.npy") as tmp:
        tmp.write_bytes(b"partial")
        raise ValueError
    assert list((tmp_path / "deep").iterdir()) == []


def test_temporary_file_is_hidden_beside_the_target(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "a.csv") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.csv.")
        assert tmp.suffix == ".csv"  # libraries that pick a format by suffix still work
        tmp.write_text("x")
        assert not (tmp_path / "a.csv").exists()  # only visible once complete
    assert (tmp_path / "a.csv").read_text() == "x"


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    write_text(tmp_path / "t.txt", "one")
    write_text(tmp_path / "t.txt", "two")
    assert (tmp_path / "t.txt").read_text() == "two"


def test_write_csv_has_unix_newlines_and_no_index(tmp_path: Path) -> None:
    frame = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "n": [1, 2]})
    path = write_csv(frame, tmp_path / "sub" / "t.csv")
    assert path.read_bytes() == b"image,n\na.jpg,1\nb.jpg,2\n"


def test_write_npy_round_trips(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.float16).reshape(3, 4)
    path = write_npy(tmp_path / "e.npy", array)
    loaded = np.load(path)
    assert loaded.dtype == np.float16 and np.array_equal(loaded, array)
    assert [p.name for p in tmp_path.iterdir()] == ["e.npy"]


def test_files_follow_the_umask_not_mkstemps_0600(tmp_path: Path) -> None:
    from wildid import faults

    old = os.umask(0o022)
    faults.umask.cache_clear()
    try:
        for path in (
            write_text(tmp_path / "a.txt", "x"),
            write_csv(pd.DataFrame({"a": [1]}), tmp_path / "b.csv"),
            write_npy(tmp_path / "c.npy", np.zeros(2)),
        ):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        os.umask(0o077)
        faults.umask.cache_clear()
        assert stat.S_IMODE(write_text(tmp_path / "d.txt", "x").stat().st_mode) == 0o600
    finally:
        os.umask(old)
        faults.umask.cache_clear()
