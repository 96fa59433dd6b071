"""Skip a stage whose outputs are up to date with its inputs and config.

A stage records a fingerprint (a hash of the config sections and input files it depends
on) in `<out>/stage.json` after it finishes; a re-run with the same fingerprint skips
the stage. A crash leaves no record, so the stage runs again (and resumes from its own
checkpoints where it has them).

A stage that caches per file instead (the crops: one per photo) compares `file_stamp`s,
so a replaced photo is redone and the others are kept.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from wildid.io import write_text

RECORD = "stage.json"


def file_identity(path: str | Path) -> dict[str, Any]:
    """Size and mtime: cheap, and enough to notice a replaced input file."""
    path = Path(path)
    if not path.exists():
        return {"path": str(path), "missing": True}
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, None if absent: the identity a per-file cache keeps."""
    try:
        stat = Path(path).stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


def fingerprint(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_done(out_dir: str | Path, key: str) -> bool:
    record = Path(out_dir) / RECORD
    if not record.is_file():
        return False
    try:
        return json.loads(record.read_text()).get("fingerprint") == key
    except json.JSONDecodeError:
        return False


def mark_done(out_dir: str | Path, key: str, **extra: Any) -> None:
    write_text(Path(out_dir) / RECORD, json.dumps({"fingerprint": key, **extra}, indent=2))
