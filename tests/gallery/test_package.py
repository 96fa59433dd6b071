"""gallery.package: the archive of a tiny trained run, and hostile archives refused."""

from __future__ import annotations

import json
import pickle
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from safetensors import safe_open

from wildid.gallery.package import (
    MANIFEST,
    ChecksumError,
    PackageError,
    UnsafePackageError,
    inspect_package,
    open_package,
    write_archive,
)


def _members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as z:
        return {n: z.read(n) for n in z.namelist() if n != MANIFEST}


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_archive_holds_safetensors_gallery_calibration_and_checksums(built) -> None:
    with zipfile.ZipFile(built.archive) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read(MANIFEST))
        meta = json.loads(z.read("package.json"))
    assert {"model.safetensors", "config.yaml", "calibration.json", "gallery/photos.csv"} <= names
    assert not any(n.endswith((".pt", ".pth", ".pkl")) for n in names)
    assert set(manifest["members"]) == names - {MANIFEST}
    assert meta["crop_mode"] == "whole" and meta["threshold"] is not None
    assert meta["image_size"] == built.config.embed_size  # what identify embeds new photos at
    assert {"torch", "timm", "numpy", "wildid"} <= set(meta["versions"])
    info = inspect_package(built.archive)
    assert info["checksums"] == "ok"
    assert info["gallery"]["photos"] == meta["photos"] > 0


def test_open_unpacks_beside_the_archive_and_reuses_it(built, tmp_path: Path) -> None:
    archive = Path(shutil.copy(built.archive, tmp_path / "p.zip"))
    package = open_package(archive)
    assert package.root == tmp_path / "p"
    with safe_open(str(package.weights), framework="pt") as weights:
        assert len(list(weights.keys())) > 10
    photos = package.photos()
    assert {"image", "individual_id", "sighting", "side", "source", "sha256"} <= set(photos)
    (package.root / "catalogue.sqlite").write_bytes(b"")  # a grown catalogue survives
    assert open_package(archive).root == package.root
    assert (package.root / "catalogue.sqlite").exists()
    assert open_package(package.root).root == package.root  # the directory itself
    assert inspect_package(package.root)["checksums"] == "ok"


def _refused(archive: Path, error: type[Exception], **limits) -> None:
    parent = archive.parent.parent
    before = _listing(parent)
    target = archive.parent / "target"
    with pytest.raises(error):
        open_package(archive, target, **limits)
    assert not target.exists()
    assert _listing(parent) == before  # nothing written anywhere


@pytest.fixture
def hostile(built, tmp_path: Path):
    """hostile(mutate) -> archive: the good members mutated, with a consistent manifest."""
    (tmp_path / "in").mkdir()

    def make(mutate) -> Path:  # noqa: ANN001
        members = _members(built.archive)
        mutate(members)
        return write_archive(members, tmp_path / "in" / "bad.zip")

    return make


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", "gallery/../../evil.txt"])
def test_member_outside_the_target_is_refused(hostile, name: str) -> None:
    _refused(hostile(lambda m: m.update({name: b"x"})), UnsafePackageError)


def test_pickle_weights_are_refused(hostile) -> None:
    evil = pickle.dumps({"model": "weights"})
    _refused(hostile(lambda m: m.update({"model.safetensors": evil})), UnsafePackageError)
    _refused(hostile(lambda m: m.update({"model.pt": evil})), UnsafePackageError)


def test_zip_wrapped_torch_checkpoint_is_refused(hostile) -> None:
    _refused(
        hostile(lambda m: m.update({"model.safetensors": b"PK\x03\x04" + b"0" * 64})),
        UnsafePackageError,
    )


@pytest.mark.parametrize("kind", [stat.S_IFLNK, stat.S_IFCHR, stat.S_IFIFO])
def test_link_and_device_members_are_refused(built, tmp_path: Path, kind: int) -> None:
    (tmp_path / "in").mkdir()
    archive = Path(shutil.copy(built.archive, tmp_path / "in" / "bad.zip"))
    with zipfile.ZipFile(archive, "a") as z:
        info = zipfile.ZipInfo("gallery/thumbs/99999.jpg")
        info.external_attr = (kind | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    _refused(archive, UnsafePackageError)


def test_oversized_member_or_total_is_refused(built, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    archive = Path(shutil.copy(built.archive, tmp_path / "in" / "p.zip"))
    _refused(archive, UnsafePackageError, max_member=1000)
    _refused(archive, UnsafePackageError, max_total=100_000)


def test_tampered_member_fails_its_checksum(built, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    archive = tmp_path / "in" / "bad.zip"
    with zipfile.ZipFile(built.archive) as good, zipfile.ZipFile(archive, "w") as bad:
        for name in good.namelist():
            data = good.read(name)
            bad.writestr(name, data + b"!" if name == "calibration.json" else data)
    _refused(archive, ChecksumError)
    assert "MISMATCH" in inspect_package(archive)["checksums"]


def test_member_missing_from_the_manifest_is_refused(built, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    archive = Path(shutil.copy(built.archive, tmp_path / "in" / "bad.zip"))
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("gallery/thumbs/99999.jpg", b"extra")
    _refused(archive, ChecksumError)


def test_a_tar_or_a_foreign_directory_is_not_a_package(built, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    link = tmp_path / "in" / "link"
    link.symlink_to("/etc/passwd")
    tar = tmp_path / "in" / "p.tar"
    with tarfile.open(tar, "w") as t:
        t.add(link, arcname="model.safetensors")
    _refused(tar, PackageError)
    with pytest.raises(PackageError):
        open_package(tmp_path / "in")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(PackageError):
        open_package(built.archive, busy)
    assert _listing(busy) == {"mine.txt"}
