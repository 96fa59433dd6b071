"""The catalogue of a package directory: SQLite records and history, embeddings beside it.

Files (in the package directory, beside the archive's members)::

    catalogue.sqlite                 WAL mode; tables photos, history, meta
    enrolled/embeddings/<sha256>.npy the embedding row(s) of each enrolled photo
    enrolled/photos/<sha256><ext>    a copy of the enrolled photo's bytes
    enrolled/thumbs/<sha256>.jpg     its thumbnail
    enrolled/keypoints/<sha256>.npz  its crop's keypoints (packages with keypoints only)

`photos` holds one record per gallery photo: those of the package (added_by "package",
embeddings in gallery/embeddings.npy) and enrolled ones. `history` holds one entry per
action (enroll, undo) with when, who, the photo and the individual. An enrollment's
embedding files are content-addressed and written atomically before its transaction; the
records and history are one `BEGIN IMMEDIATE` transaction, so two reviewers enrolling at
once are serialised by SQLite and neither can corrupt the other (a file nobody's record
points to is harmless). The same image bytes (SHA-256) can be active only once.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.errors import WildidError
from wildid.gallery.fusion import ENROLLED_KEYPOINTS, crop_features, load_fusion, pack_features
from wildid.gallery.package import Package, resolve_package, thumbnail
from wildid.io import atomic_path, write_csv, write_npy

DATABASE = "catalogue.sqlite"
BUSY_SECONDS = 120  # how long a connection waits for another process's lock
ENROLLED = "enrolled"
RECORD_COLUMNS = (
    "id, sha256, individual_id, sighting, side, source, image, thumbnail, embedding, "
    "added_at, added_by, active, entry"
)
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS photos ("
    " id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, individual_id TEXT NOT NULL,"
    " sighting TEXT, side TEXT, source TEXT, image TEXT, thumbnail TEXT NOT NULL,"
    " embedding TEXT, added_at TEXT NOT NULL, added_by TEXT NOT NULL,"
    " active INTEGER NOT NULL DEFAULT 1, entry INTEGER)",
    # enrolled photos: the same bytes active once, even if a code path forgot to check
    "CREATE UNIQUE INDEX IF NOT EXISTS enrolled_sha ON photos (sha256)"
    " WHERE active = 1 AND entry IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS photo_sha ON photos (sha256)",
    "CREATE TABLE IF NOT EXISTS history ("
    " id INTEGER PRIMARY KEY, action TEXT NOT NULL, at TEXT NOT NULL, who TEXT NOT NULL,"
    " photo INTEGER, individual_id TEXT, target INTEGER)",
)


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
    side: str | None = None
    thumbnail: str = ""  # relative to the package directory


@dataclass(frozen=True)
class Gallery:
    """The active gallery: unit rows (float32), each row's photo id and individual."""

    vectors: np.ndarray
    photos: np.ndarray  # (rows,) photo id
    labels: np.ndarray  # (rows,) individual_id
    thumbnails: dict[int, Path]  # photo id -> thumbnail file
    sightings: dict[int, str | None]
    version: int


def _use_wal(connection: sqlite3.Connection, path: Path) -> None:
    """Put the database in WAL mode (persistent: a no-op once any connection has).

    Switching a new database to WAL needs its exclusive lock, and SQLite answers "database
    is locked" at once there, without waiting out the busy timeout, while another process
    reads or switches it too: two processes opening a new catalogue together raced here.
    So the switch is retried until the busy timeout has passed.
    """
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() == "wal":
                return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
        if time.monotonic() > deadline:
            raise CatalogueError(
                f"{path}: could not switch the catalogue to WAL mode "
                f"in {BUSY_SECONDS} s (another process holds it, or the file system does "
                "not support it); close the other wildid processes and retry."
            )
        time.sleep(0.01)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _check_name(name: str) -> str:
    clean = name.strip()
    if not clean or clean == NEW_INDIVIDUAL or re.search(r"[\x00-\x1f/\\]", clean):
        raise CatalogueError(
            f"'{name}': not a usable individual name (empty, '{NEW_INDIVIDUAL}', or with "
            "slashes or control characters)."
        )
    return clean


class Catalogue:
    """The records of one package directory (a Package, or its path / archive path).

    Every method opens its own SQLite connection, so one Catalogue may be shared by
    threads, and any number of processes may open the same directory.
    """

    def __init__(self, package: Package | str | Path, embedder=None) -> None:  # noqa: ANN001
        self.package = resolve_package(package)
        self.root = self.package.root
        self.path = self.root / DATABASE
        self._embedder = embedder
        self._initialise()

    # ------------------------------------------------------------------ connection

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")
            _use_wal(connection, self.path)
            connection.execute("PRAGMA synchronous = FULL")
            if not write:
                yield connection
                return
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    def _initialise(self) -> None:
        """Create the tables and the package's records, once (safe to race)."""
        with self._connect() as db:
            for statement in SCHEMA:
                db.execute(statement)
        with self._connect(write=True) as db:
            if db.execute("SELECT 1 FROM meta WHERE key = 'initialised'").fetchone():
                return
            created = str(self.package.meta.get("created") or _now())
            photos = self.package.photos()
            db.executemany(
                "INSERT INTO photos (id, sha256, individual_id, sighting, side, source, image,"
                " thumbnail, embedding, added_at, added_by, active, entry)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, 'package', 1, NULL)",
                [
                    (
                        int(r.id),
                        r.sha256,
                        r.individual_id,
                        r.sighting,
                        r.side,
                        r.source,
                        r.image,
                        r.thumbnail,
                        created,
                    )
                    for r in photos.itertuples(index=False)
                ],
            )
            db.execute("INSERT INTO meta VALUES ('initialised', ?)", (_now(),))
            db.execute("INSERT INTO meta VALUES ('version', '0')")

    def version(self) -> int:
        """A counter bumped by every enroll and undo (to reload a cached gallery)."""
        with self._connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0])

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")

    @property
    def embedder(self):  # noqa: ANN201 (gallery.embedder.PhotoEmbedder)
        if self._embedder is None:
            from wildid.gallery.embedder import PhotoEmbedder

            self._embedder = PhotoEmbedder(self.package)
        return self._embedder

    # ------------------------------------------------------------------ reading

    def records(self, active_only: bool = True) -> list[Record]:
        where = " WHERE active = 1" if active_only else ""
        with self._connect() as db:
            rows = db.execute(f"SELECT {RECORD_COLUMNS} FROM photos{where} ORDER BY id").fetchall()
        return [self._record(row) for row in rows]

    @staticmethod
    def _record(row: tuple) -> Record:
        (
            id_,
            sha,
            individual,
            sighting,
            side,
            source,
            _image,
            thumb,
            _emb,
            at,
            by,
            active,
            entry,
        ) = row
        return Record(
            int(id_),
            sha,
            individual,
            sighting,
            source or "",
            at,
            by,
            bool(active),
            entry,
            side,
            thumb,
        )

    def _active_individuals(self, db: sqlite3.Connection) -> set[str]:
        rows = db.execute("SELECT DISTINCT individual_id FROM photos WHERE active = 1")
        return {r[0] for r in rows}

    def gallery(self) -> Gallery:
        """The active gallery's embeddings: the package's rows, then enrolled photos'."""
        with self._connect() as db:
            version = int(db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])
            rows = db.execute(
                "SELECT id, individual_id, embedding, thumbnail, sighting FROM photos"
                " WHERE active = 1 ORDER BY id"
            ).fetchall()
        base, base_photos = self.package.embeddings()
        labels_of = {r[0]: r[1] for r in rows}
        active_base = np.isin(base_photos, [r[0] for r in rows if r[2] is None])
        vectors = [
            np.asarray(base, dtype=np.float32)[active_base]
            if not active_base.all()
            else np.asarray(base, dtype=np.float32)
        ]
        photos = [base_photos[active_base]]
        for id_, _individual, embedding, _thumb, _sighting in rows:
            if embedding is None:
                continue
            array = np.load(self.root / embedding, allow_pickle=False).astype(np.float32)
            array = array.reshape(-1, base.shape[1])
            vectors.append(array)
            photos.append(np.full(len(array), id_, dtype=np.int64))
        photo_ids = np.concatenate(photos)
        return Gallery(
            np.ascontiguousarray(np.vstack(vectors)),
            photo_ids,
            np.array([labels_of[int(p)] for p in photo_ids], dtype=object),
            {r[0]: self.root / r[3] for r in rows},
            {r[0]: r[4] for r in rows},
            version,
        )

    def individuals(self) -> pd.DataFrame:
        """individual_id, photos, last_seen (active records only), one row per individual."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT individual_id, COUNT(*), MAX(added_at) FROM photos WHERE active = 1"
                " GROUP BY individual_id ORDER BY individual_id"
            ).fetchall()
        return pd.DataFrame(rows, columns=["individual_id", "photos", "last_seen"])

    def history(self) -> pd.DataFrame:
        """id, action (enroll, undo, redo), at, who, photo, individual_id, target (the
        entry an undo or redo reverses)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, action, at, who, photo, individual_id, target FROM history ORDER BY id"
            ).fetchall()
        columns = ["id", "action", "at", "who", "photo", "individual_id", "target"]
        return pd.DataFrame(rows, columns=columns)

    # ------------------------------------------------------------------ writing

    def _duplicates(self, db: sqlite3.Connection, shas: Sequence[str]) -> dict[str, str]:
        found = {}
        for sha in shas:
            row = db.execute(
                "SELECT individual_id FROM photos WHERE sha256 = ? AND active = 1", (sha,)
            ).fetchone()
            if row:
                found[sha] = row[0]
        return found

    def enroll(
        self,
        photos: Sequence[str | Path],
        individual_id: str | None = None,
        new_name: str | None = None,
        who: str = "cli",
    ) -> list[Record]:
        """Add photos to a known individual (`individual_id`) or a new one (`new_name`).

        Refused (CatalogueError, nothing changed): both or neither name given, an unknown
        individual, a new name already taken, no photos, the same bytes twice (in this
        call or already in the gallery). One history entry per photo.
        """
        if (individual_id is None) == (new_name is None):
            raise CatalogueError(
                "enroll needs exactly one of an individual (--as ID) or --new NAME."
            )
        if not photos:
            raise CatalogueError("enroll: no photos given.")
        name = _check_name(individual_id if individual_id is not None else new_name)
        paths = [Path(p) for p in photos]
        data = []
        for path in paths:
            if not path.is_file():
                raise CatalogueError(f"{path}: photo not found.")
            data.append(path.read_bytes())
        shas = [hashlib.sha256(d).hexdigest() for d in data]
        seen: dict[str, Path] = {}
        for path, sha in zip(paths, shas, strict=True):
            if sha in seen:
                raise DuplicatePhotoError(f"{path}: the same image as {seen[sha]} in this call.")
            seen[sha] = path
        self._check(name, new_name is not None, paths, shas)
        embedded = self.embedder.embed(paths)
        fusion = load_fusion(self.root)
        files = []
        for path, sha, vector in zip(paths, shas, embedded.vectors, strict=True):
            ext = (
                path.suffix.lower() if re.fullmatch(r"\.[a-z0-9]{1,5}", path.suffix.lower()) else ""
            )
            original = Path(ENROLLED) / "photos" / f"{sha}{ext}"
            thumb = Path(ENROLLED) / "thumbs" / f"{sha}.jpg"
            embedding = Path(ENROLLED) / "embeddings" / f"{sha}.npy"
            with atomic_path(self.root / original) as tmp:
                shutil.copyfile(path, tmp)
            with atomic_path(self.root / thumb) as tmp:
                tmp.write_bytes(thumbnail(path))
            write_npy(self.root / embedding, np.asarray(vector, np.float32)[None])
            files.append((original, thumb, embedding))
        if fusion is not None:  # the package ranks with keypoints: the photo's crop's too
            for sha, crop in zip(shas, embedded.crops, strict=True):
                found = crop_features(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), fusion.local)
                with atomic_path(self.root / ENROLLED_KEYPOINTS / f"{sha}.npz") as tmp:
                    tmp.write_bytes(pack_features(found))
        at = _now()
        with self._connect(write=True) as db:
            self._check(name, new_name is not None, paths, shas, db)
            made = []
            for path, sha, (_original, thumb, embedding) in zip(paths, shas, files, strict=True):
                cursor = db.execute(
                    "INSERT INTO history (action, at, who, photo, individual_id)"
                    " VALUES ('enroll', ?, ?, NULL, ?)",
                    (at, who, name),
                )
                entry = cursor.lastrowid
                cursor = db.execute(
                    "INSERT INTO photos (sha256, individual_id, sighting, side, source, image,"
                    " thumbnail, embedding, added_at, added_by, active, entry)"
                    " VALUES (?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?, 1, ?)",
                    (
                        sha,
                        name,
                        str(path.resolve()),
                        path.name,
                        str(thumb),
                        str(embedding),
                        at,
                        who,
                        entry,
                    ),
                )
                photo = cursor.lastrowid
                db.execute("UPDATE history SET photo = ? WHERE id = ?", (photo, entry))
                made.append(
                    Record(
                        photo,
                        sha,
                        name,
                        None,
                        str(path.resolve()),
                        at,
                        who,
                        True,
                        entry,
                        None,
                        str(thumb),
                    )
                )
            self._bump(db)
        return made

    def _check(
        self,
        name: str,
        new: bool,
        paths: Sequence[Path],
        shas: Sequence[str],
        db: sqlite3.Connection | None = None,
    ) -> None:
        if db is None:
            with self._connect() as fresh:
                return self._check(name, new, paths, shas, fresh)
        known = self._active_individuals(db)
        if new and name in known:
            raise CatalogueError(
                f"'{name}' is already an individual of the catalogue; enroll with --as {name}, "
                "or choose another name."
            )
        if not new and name not in known:
            raise CatalogueError(
                f"'{name}': no such individual in the catalogue; declare it with --new {name}."
            )
        duplicates = self._duplicates(db, shas)
        for path, sha in zip(paths, shas, strict=True):
            if sha in duplicates:
                raise DuplicatePhotoError(
                    f"{path}: the same image bytes are already in the gallery (individual "
                    f"{duplicates[sha]}); nothing enrolled."
                )
        return None

    def undo(self, entry_id: int, who: str = "cli") -> int:
        """Reverse history entry `entry_id`: an enroll (the photo leaves the gallery) or an
        undo (the photo comes back: redo). Returns the new history entry's id."""
        with self._connect(write=True) as db:
            row = db.execute(
                "SELECT action, photo, individual_id FROM history WHERE id = ?", (entry_id,)
            ).fetchone()
            if row is None:
                raise CatalogueError(f"history entry {entry_id} does not exist.")
            action, photo, individual = row
            if db.execute("SELECT 1 FROM history WHERE target = ?", (entry_id,)).fetchone():
                raise CatalogueError(f"history entry {entry_id} was already undone.")
            state = db.execute(
                "SELECT active, sha256 FROM photos WHERE id = ?", (photo,)
            ).fetchone()
            if state is None:
                raise CatalogueError(f"history entry {entry_id} names no photo.")
            if action in ("enroll", "redo"):
                if not state[0]:
                    raise CatalogueError(f"history entry {entry_id}: photo {photo} is not active.")
                db.execute("UPDATE photos SET active = 0 WHERE id = ?", (photo,))
                reverse = "undo"
            else:
                if self._duplicates(db, [state[1]]):
                    raise DuplicatePhotoError(
                        f"history entry {entry_id}: photo {photo}'s bytes are in the gallery "
                        "again; cannot redo."
                    )
                db.execute("UPDATE photos SET active = 1 WHERE id = ?", (photo,))
                reverse = "redo"
            cursor = db.execute(
                "INSERT INTO history (action, at, who, photo, individual_id, target)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (reverse, _now(), who, photo, individual, entry_id),
            )
            self._bump(db)
            return int(cursor.lastrowid)

    def export(self, out_dir: str | Path, sources: bool = True) -> Path:
        """catalogue.csv plus a folder per individual with its photos: the enrolled copy or
        the package's source photo where it still exists (`sources`; the app passes False,
        so it reads nothing outside the package), else the thumbnail."""
        out = Path(out_dir)
        rows = []
        for record in self.records():
            folder = re.sub(r"[^A-Za-z0-9._-]+", "_", record.individual_id) or "_"
            original = None
            with self._connect() as db:
                image = db.execute(
                    "SELECT image, embedding FROM photos WHERE id = ?", (record.id,)
                ).fetchone()
            if record.entry is not None:
                found = sorted((self.root / ENROLLED / "photos").glob(f"{record.sha256}*"))
                original = found[0] if found else None
            elif sources and record.source and Path(record.source).is_file():
                original = Path(record.source)
            source = original or self.root / record.thumbnail
            name = f"{record.id}_{Path(image[0] or source.name).name}"
            target = out / folder / name
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            rows.append(
                {
                    "photo": record.id,
                    "individual_id": record.individual_id,
                    "file": str(target.relative_to(out)),
                    "thumbnail_only": original is None,
                    "sha256": record.sha256,
                    "sighting": record.sighting,
                    "side": record.side,
                    "source": record.source,
                    "added_at": record.added_at,
                    "added_by": record.added_by,
                }
            )
        write_csv(pd.DataFrame(rows), out / "catalogue.csv")
        return out
