"""Stage records: a stage is skipped only when its fingerprint matches a finished run."""

from __future__ import annotations

import os
from pathlib import Path

from wildid.cache import RECORD, file_identity, file_stamp, fingerprint, is_done, mark_done


def test_fingerprint_is_stable_and_sensitive() -> None:
    parts = ({"train": {"epochs": 3}}, "data", [1, 2])
    assert fingerprint(*parts) == fingerprint(*parts)
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})  # key order
    assert fingerprint({"train": {"epochs": 4}}, "data", [1, 2]) != fingerprint(*parts)
    assert fingerprint([1, 2]) != fingerprint([2, 1])
    assert fingerprint(Path("x")) == fingerprint("x")  # non-JSON values by their str


def test_file_identity_notices_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    assert file_identity(path) == {"path": str(path), "missing": True}
    path.write_text("a")
    first = file_identity(path)
    path.write_text("ab")
    assert file_identity(path) != first  # size
    before, stat = file_identity(path), path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, rewritten
    after = file_identity(path)
    assert after["size"] == before["size"] and after != before


def test_file_stamp_is_size_and_mtime_or_none(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    assert file_stamp(path) is None
    path.write_bytes(b"abc")
    stamp = file_stamp(path)
    assert stamp == (3, path.stat().st_mtime_ns)
    os.utime(path, ns=(0, stamp[1] + 10**9))  # rewritten in place, same size
    assert file_stamp(path) == (3, stamp[1] + 10**9)


def test_done_only_after_mark_with_the_same_key(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    assert not is_done(out, "k1")  # folder absent
    mark_done(out, "k1", images=3)
    assert is_done(out, "k1")
    assert not is_done(out, "k2")
    mark_done(out, "k2")
    assert is_done(out, "k2") and not is_done(out, "k1")


def test_corrupt_record_means_not_done(tmp_path: Path) -> None:
    (tmp_path / RECORD).write_text("{not json")
    assert not is_done(tmp_path, "k")
