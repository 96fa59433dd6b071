"""gallery.store: enroll, undo, duplicates refused, concurrent writers, export."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from wildid.gallery.store import Catalogue, CatalogueError, DuplicatePhotoError, _use_wal

REPO = Path(__file__).resolve().parents[2]


def test_enroll_new_then_known_then_undo(package, built) -> None:
    catalogue = Catalogue(package)
    before = catalogue.individuals()
    first, second = built.test_photos()[:2]
    [record] = catalogue.enroll([first], new_name="Juno", who="ana")
    assert record.individual_id == "Juno" and record.added_by == "ana" and record.active
    catalogue.enroll([second], individual_id="Juno", who="ben")
    table = catalogue.individuals().set_index("individual_id")
    assert table.loc["Juno", "photos"] == 2
    assert len(table) == len(before) + 1
    history = catalogue.history()
    assert history["action"].tolist() == ["enroll", "enroll"]
    assert history["who"].tolist() == ["ana", "ben"]
    undo = catalogue.undo(record.entry, who="ana")
    assert catalogue.individuals().set_index("individual_id").loc["Juno", "photos"] == 1
    assert catalogue.history()["action"].tolist()[-1] == "undo"
    with pytest.raises(CatalogueError):
        catalogue.undo(record.entry)  # already undone
    catalogue.undo(undo)  # redo
    assert catalogue.individuals().set_index("individual_id").loc["Juno", "photos"] == 2


def test_refusals_change_nothing(package, built) -> None:
    catalogue = Catalogue(package)
    photo = built.test_photos()[0]
    train_photo, individual = built.train_photo(0)
    with pytest.raises(CatalogueError):
        catalogue.enroll([photo], individual_id="no-such-animal")
    with pytest.raises(CatalogueError):
        catalogue.enroll([photo], new_name=individual)  # name taken
    with pytest.raises(CatalogueError):
        catalogue.enroll([photo], individual_id=individual, new_name="x")
    with pytest.raises(DuplicatePhotoError):
        catalogue.enroll([train_photo], individual_id=individual)  # already in the package
    with pytest.raises(DuplicatePhotoError):
        catalogue.enroll([photo, photo], new_name="Twice")
    catalogue.enroll([photo], new_name="Once")
    with pytest.raises(DuplicatePhotoError):
        catalogue.enroll([photo], individual_id="Once")
    assert len(catalogue.history()) == 1


def test_database_is_wal_and_every_photo_has_a_record(package) -> None:
    catalogue = Catalogue(package)
    with sqlite3.connect(catalogue.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(catalogue.records()) == package.meta["photos"]
    assert len(catalogue.gallery().vectors) == package.meta["rows"]


def test_threads_enrolling_at_once(package, built) -> None:
    photos = built.test_photos()[:6]
    embedder = Catalogue(package).embedder
    errors: list[Exception] = []

    def work(name: str, mine: list[Path]) -> None:
        catalogue = Catalogue(package, embedder=embedder)  # its own connections
        try:
            catalogue.enroll(mine[:1], new_name=name, who=name)
            for photo in mine[1:]:
                catalogue.enroll([photo], individual_id=name, who=name)
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [
        threading.Thread(target=work, args=("A", photos[:3])),
        threading.Thread(target=work, args=("B", photos[3:])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    table = Catalogue(package).individuals().set_index("individual_id")
    assert table.loc["A", "photos"] == 3 and table.loc["B", "photos"] == 3
    assert len(Catalogue(package).history()) == 6


def test_two_processes_enrolling_the_same_photo(package, built) -> None:
    """Two CLI processes race to enroll one photo: one wins, the other is refused."""
    photo = built.test_photos()[0]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    commands = [
        [sys.executable, "-m", "wildid.cli", "enroll", str(package.root), str(photo), "--new", name]
        for name in ("P1", "P2")
    ]
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes == [0, 2], [p.stderr.read() for p in procs]
    catalogue = Catalogue(package)
    names = set(catalogue.individuals()["individual_id"])
    assert len({"P1", "P2"} & names) == 1
    assert len(catalogue.history()) == 1
    with sqlite3.connect(catalogue.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


class LockedAtFirst:
    """A connection whose WAL switch is refused "database is locked" `times` times, as
    SQLite refuses it at once (no busy wait) while another process opens a new database."""

    def __init__(self, connection: sqlite3.Connection, times: int) -> None:
        self.connection, self.left, self.refused = connection, times, 0

    def execute(self, statement: str):  # noqa: ANN201
        if statement == "PRAGMA journal_mode = WAL" and self.left:
            self.left -= 1
            self.refused += 1
            raise sqlite3.OperationalError("database is locked")
        return self.connection.execute(statement)


def test_a_refused_wal_switch_is_retried(tmp_path: Path) -> None:
    """Two CLI processes opening a new catalogue together failed CI once: the loser's
    switch to WAL was refused at once. The switch is retried until it takes."""
    path = tmp_path / "new.sqlite"
    connection = LockedAtFirst(sqlite3.connect(path, isolation_level=None), times=3)
    _use_wal(connection, path)
    assert connection.refused == 3
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other = sqlite3.connect(path)  # WAL is the database's, not the connection's
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_wal_switch_that_never_takes_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("wildid.gallery.store.BUSY_SECONDS", 0.05)
    path = tmp_path / "new.sqlite"
    connection = LockedAtFirst(sqlite3.connect(path, isolation_level=None), times=10**6)
    with pytest.raises(CatalogueError, match="new.sqlite: could not switch"):
        _use_wal(connection, path)


def test_export_writes_csv_and_a_folder_per_individual(package, built, tmp_path: Path) -> None:
    catalogue = Catalogue(package)
    catalogue.enroll([built.test_photos()[0]], new_name="Juno")
    out = catalogue.export(tmp_path / "export")
    table = pd.read_csv(out / "catalogue.csv")
    assert len(table) == len(catalogue.records())
    assert all((out / f).is_file() for f in table["file"])
    assert (out / "Juno").is_dir()
