"""The catalogue of a package directory: SQLite records and history, embeddings beside it.

Files (in the package directory, beside the archive's members)::

    catalogue.sqlite                 WAL mode; tables photos, history, meta
    enrolled/embeddings/<sha256>.npy the embedding row(s) of each enrolled photo
    enrolled/photos/<sha256><ext>    a copy of the enrolled photo's bytes
    enrolled/thumbs/<sha256>.jpg     its thumbnail

`photos` holds one record per gallery photo: those of the package (added_by "package",
embeddings in gallery/embeddings.npy) and enrolled ones. `history` holds one entry per
action (enroll, undo) with when, who, the photo and the individual. An enrollment's
embedding files are content-addressed and written atomically before its transaction; the
records and history are one `BEGIN IMMEDIATE` transaction, so two reviewers enrolling at
once are serialised by SQLite and neither can corrupt the other (a file nobody's record
points to is harmless). The same image bytes (SHA-256) can be active only once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wildid.errors import WildidError


class CatalogueError(WildidError, ValueError):
    """An enrollment or undo the catalogue cannot do; the message says why."""


class DuplicatePhotoError(CatalogueError):
    """These image bytes are already in the gallery."""


@dataclass(frozen=True)
class Record:
    """One gallery photo."""

    id: int
    sha256: str
    individual_id: str
    sighting: str | None
    source: str
    added_at: str
    added_by: str
    active: bool
    entry: int | None = None  # the history entry that enrolled it (None: from the package)


class Catalogue:
    """The records of one package directory (a Package, or its path / archive path)."""

    def __init__(self, package, embedder=None) -> None:  # noqa: ANN001
        raise NotImplementedError

    def enroll(
        self,
        photos: Sequence[str | Path],
        individual_id: str | None = None,
        new_name: str | None = None,
        who: str = "cli",
    ) -> list[Record]:
        """Add photos to a known individual (`individual_id`) or a new one (`new_name`)."""
        raise NotImplementedError

    def undo(self, entry_id: int, who: str = "cli") -> int:
        """Reverse history entry `entry_id` (an enroll); returns the new history entry."""
        raise NotImplementedError

    def individuals(self) -> pd.DataFrame:
        """individual_id, photos, last_seen (active records only), one row per individual."""
        raise NotImplementedError

    def history(self) -> pd.DataFrame:
        raise NotImplementedError

    def export(self, out_dir: str | Path) -> Path:
        """catalogue.csv plus a folder per individual with its photos (or thumbnails)."""
        raise NotImplementedError
