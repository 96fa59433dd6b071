"""A trained run as one archive, and its safe unpacking into a package directory.

Why zip: members can be listed and read one at a time (inspect reads the manifest without
unpacking), it is in the standard library on every platform a biologist uses, and it has
no native link or device members (tar has symlinks, hard links, devices and fifos, each a
way out of the target directory); zip's Unix mode bits can still mark a symlink, so those
are refused too. Archive layout (every member listed with its SHA-256 in manifest.json)::

    manifest.json             {"format", "version", "members": {name: {sha256, size}}}
    package.json              run, threshold, crop mode, image size, mean/std, versions
    config.yaml               the resolved config the model was trained with
    model.safetensors         EmbeddingNet weights (never a pickle)
    calibration.json          logistic score -> probability (see gallery.calibration)
    gallery/embeddings.npy    (rows, dim) float16 unit rows
    gallery/rows.npy          (rows,) int64: the photo id of each row (flip mirrors add rows)
    gallery/photos.csv        id, image, individual_id, sighting, side, source, sha256, thumbnail
    gallery/thumbs/<id>.jpg   a small JPEG per photo (at most THUMB px on its longer side)

The package directory. `open_package(archive, workdir)` checks every member before writing
anything, then unpacks into `workdir` (default: the archive's path without `.zip`, beside
it), which must be absent or empty, or hold this very archive's unpacking (its
manifest.json is the archive's, byte for byte): then it is reused as it is. That directory
is the living catalogue: `enroll` adds `catalogue.sqlite` and `enrolled/` there and never
touches the archive, so identify, enroll and serve accept either the archive (resolved to
its directory) or the directory itself.

Refused (PackageError subclasses, one line; on refusal nothing stays in the target and
nothing is written outside it): member names that are absolute, contain `..`, a
backslash or a drive letter, or are not one of the layout's names; symlink, device and
other non-regular members; encrypted members; a member or total over the size limits;
members missing from the manifest or the manifest's members missing from the archive; a
SHA-256 mismatch; weights that are not a valid safetensors file (a pickle, a zip-wrapped
torch checkpoint); .npy files that need pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wildid.config import Config
from wildid.errors import WildidError

FORMAT = "wildid-package"
VERSION = 1
THUMB = 256  # longer side of gallery thumbnails, px
MAX_MEMBER = 4 << 30  # bytes one member may unpack to
MAX_TOTAL = 16 << 30  # bytes all members may unpack to


class PackageError(WildidError, ValueError):
    """A package cannot be built or read; the message names the file and what to do."""


class UnsafePackageError(PackageError):
    """An archive member could write outside the target, hide a link, or run code."""


class ChecksumError(PackageError):
    """A member's SHA-256 differs from the manifest's: the archive was altered or damaged."""


@dataclass(frozen=True)
class Package:
    """An unpacked package directory (see the module docstring)."""

    root: Path

    @property
    def meta(self) -> dict[str, Any]:
        """package.json."""
        raise NotImplementedError

    @property
    def config(self) -> Config:
        raise NotImplementedError


def build_package(run: str | Path, out: Path, config: Config | None = None) -> Path:
    """Write the archive of run folder `run` (working/<run>) to `out`; returns `out`."""
    raise NotImplementedError


def inspect_package(path: str | Path) -> dict[str, Any]:
    """What `wildid package --inspect` prints: package.json, member count and sizes, gallery
    size, and whether every checksum matches (read in place, nothing unpacked)."""
    raise NotImplementedError


def open_package(
    path: str | Path,
    workdir: str | Path | None = None,
    max_member: int = MAX_MEMBER,
    max_total: int = MAX_TOTAL,
) -> Package:
    """A package directory: `path` itself when it is one, else the archive unpacked safely."""
    raise NotImplementedError
