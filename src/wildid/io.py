"""Atomic file writes: a crash mid-write never leaves a half-written output behind.

Every stage writes through these helpers, so a re-run after a crash sees either the
old file or the complete new one, never a truncated one it would mistake as done.

A full, read-only or forbidden disk ends a write with one `wildid.faults.StorageError`
naming the path, the bytes needed and the bytes free; the temporary is removed. Files get
the mode `open()` would give them (0o666 less the umask), not mkstemp's 0o600. A killed
process's temporaries (`.<name>.<8 chars><suffix>`) are swept by `wildid.faults.sweep`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from wildid import faults


@contextmanager
def atomic_path(
    path: str | Path, suffix: str | None = None, size: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.

    `size`: the bytes about to be written, if known (for the disk-full message; else the
    temporary's size when the write failed stands in).
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp"
        )
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, faults.file_mode())
        os.replace(tmp_path, path)
    except OSError as err:
        # Only errors of this write: an input the block failed to read keeps its own error.
        where = None if err.filename is None else Path(os.fsdecode(err.filename))
        ours = where is None or where.parent == path.parent or where in path.parents
        if not (faults.is_storage_error(err) and ours):
            raise
        written = tmp_path.stat().st_size if tmp_path and tmp_path.exists() else 0
        raise faults.storage_error(err, path, size or written or None) from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", size: int | None = None, **kwargs: Any
) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces `path` when the block ends cleanly."""
    with atomic_path(path, size=size) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def write_text(path: str | Path, text: str) -> Path:
    data = text.encode("utf-8")
    with atomic_open(path, "wb", size=len(data)) as handle:
        handle.write(data)
    return Path(path)


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a CSV atomically with Unix line endings and no index (byte-stable for a seed)."""
    data = df.to_csv(index=False, lineterminator="\n").encode("utf-8")
    with atomic_open(path, "wb", size=len(data)) as handle:
        handle.write(data)
    return Path(path)


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    with atomic_path(path, suffix=".npy", size=array.nbytes + 128) as tmp:
        np.save(tmp, array)
    return Path(path)
