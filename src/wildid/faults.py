"""Faults of the machine a run lives on: full or read-only disks, leftover temporaries, and
two runs of one config at once. Each becomes one line naming the path and the fix.

- `storage_error(err, path, needed)` turns ENOSPC / EDQUOT / EROFS / EACCES / EPERM into a
  `StorageError` naming the path, the bytes needed and the bytes free (wildid.io and the
  checkpoint save call it).
- `preflight(folders)` checks, before the long stages, that each folder can be written
  (by creating a file in it: permission bits do not bind root, so asking `os.access` would
  pass a read-only mount's check under root) and has `MIN_FREE` bytes free.
- `sweep(root)` removes the temporaries of wildid's atomic writes (`.<name>.<8 chars><suffix>`,
  wildid.io) that a killed process left behind.
- `RunLock`: an exclusive `flock` on `working/<run>/.lock`. The kernel drops it when its
  holder exits, however it exits (SIGKILL included), so no stale lock outlives a run.
- `umask()`: the process's umask, read once without changing it; atomic writes make files
  with `0o666 & ~umask` like `open()` does.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from wildid.errors import WildidError

# Below this many free bytes a folder fails the preflight: a checkpoint of the mini model
# is ~30 MB (last.pt and best.pt, plus a temporary while one is replaced).
MIN_FREE = 256 * 2**20
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
LOCK_NAME = ".lock"
# A temporary in a folder no lock covers (shared crops) is a killed write's after this long:
# one crop, the longest write there, takes milliseconds.
STALE_AFTER = 600.0
# wildid.io's temporaries: tempfile.mkstemp(prefix=".<name>.", suffix=<suffix>).
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}(?P<suffix>\.[A-Za-z0-9]+)")


class StorageError(WildidError):
    """An output cannot be written: the disk is full, read-only, or not ours to write."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


class RunLockedError(WildidError):
    """Another process is running the same run (same working folder and name)."""


def human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError  # unreachable


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the disk holding `path` (its nearest existing parent); None if unknown."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def is_storage_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in STORAGE_ERRNOS


def storage_error(err: OSError, path: str | Path, needed: int | None = None) -> StorageError:
    """The one-line error for an OSError `err` met writing `path` (`needed`: bytes, if known)."""
    free = free_bytes(path)
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        cause = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
        need = f"needs about {human(needed)} ({needed} bytes)" if needed else "needs more room"
        have = f"{human(free)} ({free} bytes) free" if free is not None else "free space unknown"
        fix = "free some space there, or point `working`/`submissions` to another disk"
        return StorageError(code, f"{path}: {cause}: writing it {need}, {have}; {fix}.")
    cause = "read-only file system" if code == errno.EROFS else "permission denied"
    return StorageError(
        code,
        f"{path}: cannot write ({cause}); make {Path(path).parent} writable, or point "
        "`working`/`submissions` to a folder you can write.",
    )


def check_writable(folder: str | Path, min_free: int = MIN_FREE) -> None:
    """Refuse (StorageError) a folder that cannot be made, written, or lacks `min_free` bytes."""
    folder = Path(folder)
    probe = folder / ".wildid-write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".wildid-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(name)
    except FileExistsError as err:  # a file where a folder should be
        raise StorageError(
            errno.ENOTDIR, f"{folder}: not a folder ({err.filename} is a file); move it away."
        ) from None
    except NotADirectoryError:
        raise StorageError(
            errno.ENOTDIR, f"{folder}: a file stands where a folder on this path should be."
        ) from None
    except OSError as err:
        if not is_storage_error(err):
            raise
        raise storage_error(err, probe) from None
    free = free_bytes(folder)
    if free is not None and free < min_free:
        raise StorageError(
            errno.ENOSPC,
            f"{folder}: only {human(free)} ({free} bytes) free, a run needs at least "
            f"{human(min_free)} ({min_free} bytes); free some space there, or point "
            "`working`/`submissions` to another disk.",
        )


def preflight(folders: list[Path], min_free: int = MIN_FREE) -> None:
    """Check every output folder before the long stages (crop, train, embed) start."""
    for folder in folders:
        check_writable(folder, min_free)


def temporary_of(path: Path) -> str | None:
    """The name of the file `path` is one of wildid.io's temporaries for, else None."""
    match = _TEMPORARY.fullmatch(path.name)
    if match is None:
        return None
    suffixes = (Path(match["name"]).suffix, ".tmp", ".npy", ".pt", ".npz", ".zip", ".png")
    return match["name"] if match["suffix"] in suffixes else None


def is_temporary(path: Path) -> bool:
    """Whether `path` is named like one of wildid.io's temporaries."""
    return temporary_of(path) is not None


def sweep(root: str | Path, older_than: float | None = None, recursive: bool = True) -> list[Path]:
    """Remove temporaries under `root` last modified before `older_than` (default: now).

    Call it only on folders no other live process writes to (a run's folder, under its
    lock): a live write's temporary would vanish under it.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    cutoff = time.time() if older_than is None else older_than
    removed = []
    for path in root.rglob(".*") if recursive else root.glob(".*"):
        try:
            if path.is_file() and is_temporary(path) and path.stat().st_mtime <= cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    return removed


@functools.cache
def umask() -> int:
    """The process's umask, read once; from /proc where it can be read without changing it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)  # no /proc: read it by setting and restoring it
    os.umask(current)
    return current


def file_mode() -> int:
    """The mode `open()` would give a new file: 0o666 less the umask."""
    return 0o666 & ~umask()


class RunLock:
    """An exclusive lock on a run's folder, held while this object (or the process) lives.

    `flock` locks belong to an open file: the kernel releases it when the descriptor is
    closed, which happens when the holder exits in any way (SIGKILL too), so a stale lock
    never needs clearing by hand. The holder's pid is written into the file for the message.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunLockedError at once naming the holder."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
        except OSError as err:
            if is_storage_error(err):
                raise storage_error(err, self.path) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent}: another wildid process (pid {holder}) is running this "
                f"run; wait for it to finish (e.g. `tail --pid={holder} -f /dev/null`), stop "
                "it, or give this run another name (name=...)."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless, reused)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
