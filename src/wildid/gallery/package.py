"""A trained run as one archive, and its safe unpacking into a package directory.

Why zip: members can be listed and read one at a time (inspect reads the manifest without
unpacking), it is in the standard library on every platform a biologist uses, and it has
no native link or device members (tar has symlinks, hard links, devices and fifos, each a
way out of the target directory); zip's Unix mode bits can still mark a symlink, so those
are refused too. Archive layout (every member listed with its SHA-256 in manifest.json)::

    manifest.json             {"format", "version", "members": {name: {sha256, size}}}
    package.json              run, threshold, crop mode, image size, mean/std, side regex,
                              versions
    config.yaml               the resolved config the model was trained with
    model.safetensors         EmbeddingNet weights (never a pickle)
    calibration.json          logistic score -> probability (see gallery.calibration)
    gallery/embeddings.npy    (rows, dim) unit rows, float16 (the run's embed.dtype)
    gallery/rows.npy          (rows,) int64: the photo id of each row (flip mirrors add rows)
    gallery/photos.csv        id, image, individual_id, sighting, side, source, sha256, thumbnail
    gallery/thumbs/<id>.jpg   a small JPEG per photo (at most THUMB px on its longer side)
    fusion.json               with local matching only: its settings, calibrations, weights
                              and operating points (see gallery.fusion)
    gallery/keypoints/<id>.npz  with local matching only: each photo's keypoints

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

import hashlib
import io
import json
import os
import platform
import re
import shutil
import stat
import struct
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import yaml

from wildid.config import Config, load_config
from wildid.errors import WildidError
from wildid.evaluation.protocols import SIDE_REGEX
from wildid.gallery.calibration import Calibration, fit_probability, load_calibration
from wildid.infer.openset import OPERATING_POINTS, OperatingPoints, choose_operating_points
from wildid.io import atomic_path
from wildid.matching.calibration import IsotonicCalibration

FORMAT = "wildid-package"
VERSION = 1
THUMB = 256  # longer side of gallery thumbnails, px
# identify's default open-set decision: the gmean(BAKS, BAUS)-optimal threshold, which
# balances recognising known animals against calling new ones new (MAP@5's optimum calls
# most queries new when the model is unsure)
DEFAULT_POINT = "gmean"
MAX_MEMBER = 4 << 30  # bytes one member may unpack to
MAX_TOTAL = 16 << 30  # bytes all members may unpack to
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
MEMBER_NAMES = re.compile(
    r"(manifest\.json|package\.json|config\.yaml|model\.safetensors|calibration\.json"
    r"|gallery/(embeddings|rows)\.npy|gallery/photos\.csv|gallery/thumbs/[0-9]+\.jpg"
    r"|fusion\.json|gallery/keypoints/[0-9]+\.npz)"
)
PHOTO_COLUMNS = [
    "id",
    "image",
    "individual_id",
    "sighting",
    "side",
    "source",
    "sha256",
    "thumbnail",
]
CHUNK = 1 << 20


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

    @cached_property
    def meta(self) -> dict[str, Any]:
        """package.json: run, threshold, crop mode, image size, mean/std, versions."""
        return json.loads((self.root / "package.json").read_text())

    @cached_property
    def config(self) -> Config:
        return load_config(self.root / "config.yaml")

    @cached_property
    def calibration(self) -> Calibration | IsotonicCalibration:
        return load_calibration(json.loads((self.root / "calibration.json").read_text()))

    def probability_threshold(self, point: str | None = None) -> float | None:
        """The "new individual" threshold on the best candidate's calibrated probability at
        operating point `point` ("map5" or "gmean"; None: the package's default), or None
        for a package built before operating points were stored."""
        points = self.meta.get("operating_points")
        if not points:
            return None
        point = point or self.meta.get("operating_point") or DEFAULT_POINT
        if point not in OPERATING_POINTS:
            raise PackageError(
                f"operating point {point!r}: expected one of {', '.join(OPERATING_POINTS)}."
            )
        return float(points[point])

    @property
    def threshold(self) -> float | None:
        value = self.meta.get("threshold")
        return None if value is None else float(value)

    @property
    def weights(self) -> Path:
        return self.root / WEIGHTS

    def photos(self) -> pd.DataFrame:
        """gallery/photos.csv: the packaged gallery's photos (see PHOTO_COLUMNS)."""
        table = pd.read_csv(self.root / "gallery" / "photos.csv", dtype=str, keep_default_na=False)
        table["id"] = table["id"].astype(int)
        return table.replace({"": None})

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, dim) memory map (float16, or the run's embed.dtype) and each row's
        photo id."""
        gallery = self.root / "gallery"
        vectors = np.load(gallery / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        return vectors, np.load(gallery / "rows.npy", allow_pickle=False)


# --------------------------------------------------------------------------- build


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def thumbnail(path: Path) -> bytes:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PackageError(f"{path}: cannot read this gallery photo (missing or corrupt).")
    scale = THUMB / max(image.shape[:2])
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise PackageError(f"{path}: cannot encode a thumbnail.")
    return encoded.tobytes()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def versions() -> dict[str, str]:
    """The versions of the libraries a package's numbers depend on."""
    import safetensors
    import sklearn
    import timm
    import torch

    import wildid

    return {
        "wildid": wildid.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "scikit-learn": sklearn.__version__,
    }


def crop_mode(config: Config) -> str:
    """ "whole" (the whole photo) or "cam" (an activation-map box): how a new photo is cut."""
    if config.crop.source == "whole" or all(k == "whole" for k in config.crop.kinds):
        return "whole"
    return "cam"


def side_of(name: str | Path, pattern: re.Pattern[str] | str | None) -> str | None:
    """The flank a file name records (`pattern`'s first group, or its whole match when it
    has none), as the evaluation protocols read it; None without a pattern or a match."""
    if pattern is None:
        return None
    pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
    match = pattern.search(Path(name).name)
    if match is None:
        return None
    return match.group(1) if pattern.groups else match.group(0)


def _gallery_table(config: Config, images: list[str], side_regex: str | None) -> pd.DataFrame:
    """image, individual_id, sighting, side, source for the gallery's photos, in order.

    The side is read from each photo's source file name with `side_regex` when the run's
    data was imported from a catalogue (catalogue.csv names the sources)."""
    data = Path(config.data)
    train = pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False)
    table = pd.DataFrame({"image": images})
    table["individual_id"] = table["image"].map(
        dict(zip(train["image"], train["individual_id"], strict=True))
    )
    table["sighting"] = None
    table["source"] = [str((data / "train_images" / i).resolve()) for i in images]
    catalogue = data / "catalogue.csv"
    if catalogue.is_file():
        rows = pd.read_csv(catalogue, dtype=str, keep_default_na=False).set_index("image")
        known = table["image"].isin(rows.index)
        table.loc[known, "sighting"] = rows.loc[table.loc[known, "image"], "group"].to_numpy()
        table.loc[known, "source"] = rows.loc[table.loc[known, "image"], "source"].to_numpy()
    pattern = re.compile(side_regex) if side_regex and catalogue.is_file() else None
    table["side"] = [side_of(source, pattern) for source in table["source"]]
    if table["individual_id"].isna().any():
        missing = table.loc[table["individual_id"].isna(), "image"].iloc[0]
        raise PackageError(f"{data / 'train.csv'}: no row for gallery image {missing}.")
    return table


def _calibrate(
    vectors: np.ndarray,
    labels: np.ndarray,
    roles: np.ndarray | None,
    truths: np.ndarray | None,
    groups: np.ndarray,
    k: int = 5,
    sample: int = 4000,
) -> tuple[Calibration | IsotonicCalibration, OperatingPoints | None]:
    """The score -> probability calibration and the open-set operating points on it.

    Fitted on validation queries (roles) when the run has some, else leave-one-sighting-out
    on the gallery: each sampled photo against the photos of other sightings (known when
    its individual has one, else new), and again against the photos of other individuals
    (new): so every catalogue, with sighting ids or without, has new pseudo-queries to set
    the "new individual" threshold on. The operating points (`choose_operating_points`)
    are thresholds on the calibrated probability of the best candidate.
    """
    from wildid.data.competition import NEW_INDIVIDUAL
    from wildid.infer.retrieval import PAD, Ranking, best_per_individual, group_best, search

    vectors = np.asarray(vectors, dtype=np.float32)
    if roles is not None and (roles == "val").any() and (roles == "train").any():
        fit, val = np.flatnonzero(roles == "train"), np.flatnonzero(roles == "val")
        sims, idx = search(vectors[fit], vectors[val], 50, kind="exact")
        ranking = best_per_individual(sims, idx, labels[fit])
        codes, scores = ranking.codes[:, :k], ranking.scores[:, :k]
        names = np.append(ranking.individuals.astype(str), "")
        same = names[np.where(codes == PAD, len(names) - 1, codes)] == truths[val][:, None]
        valid = codes != PAD
        calibration = fit_probability(scores[valid], same[valid], "validation")
        ranked = Ranking(codes, _probabilities(calibration, scores, valid), ranking.individuals)
        return calibration, choose_operating_points(ranked, truths[val].tolist())
    rng = np.random.default_rng(0)
    queries = np.sort(rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False))
    sims, idx = search(vectors, vectors[queries], min(len(vectors), 64), kind="exact")
    individuals, codes = np.unique(labels, return_inverse=True)
    own_sighting = groups[idx] == groups[queries][:, None]
    own_individual = codes[idx] == codes[queries][:, None]
    sightings = pd.Series(groups).groupby(labels).nunique()
    known = sightings.loc[labels[queries]].to_numpy() > 1
    parts, truth_rows = [], []
    for own, role in ((own_sighting, "sighting"), (own_individual, "individual")):
        cand, scores = group_best(np.where(own, -np.inf, sims), np.where(own, PAD, codes[idx]))
        parts.append((cand[:, :k], scores[:, :k]))
        truth_rows += [
            labels[q] if role == "sighting" and is_known else NEW_INDIVIDUAL
            for q, is_known in zip(queries, known, strict=True)
        ]
    width = max(p[0].shape[1] for p in parts)
    cand = np.concatenate(
        [np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=PAD) for c, _ in parts]
    )
    scores = np.concatenate(
        [np.pad(s, ((0, 0), (0, width - s.shape[1])), constant_values=-np.inf) for _, s in parts]
    )
    valid = (cand != PAD) & np.isfinite(scores)
    same = cand == np.concatenate([codes[queries], codes[queries]])[:, None]
    calibration = fit_probability(scores[valid], same[valid], "leave-one-out")
    ranked = Ranking(cand, _probabilities(calibration, scores, valid), individuals)
    return calibration, choose_operating_points(ranked, truth_rows)


def _probabilities(calibration, scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.where(valid, calibration.probability(np.where(valid, scores, 0.0)), -np.inf)


def _local_members(
    config: Config,
    table: pd.DataFrame,
    vectors: np.ndarray,
    source: np.ndarray,
    groups: np.ndarray,  # per photo
    roles: np.ndarray | None,  # per gallery row, as `_calibrate` takes them
    truths: np.ndarray | None,
    progress: bool,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """fusion.json and each gallery photo's keypoints (`gallery.fusion`): keypoints found
    on the run's own crops, the fusion fitted on calibration rows as `_calibrate`'s."""
    from wildid.crop.boxes import make_crops
    from wildid.data.competition import load_competition
    from wildid.gallery.fusion import (
        FUSION,
        KEYPOINTS,
        calibration_rows,
        fit_fusion,
        pack_features,
        quantised,
    )
    from wildid.matching.local import extract_paths
    from wildid.pipeline.fusion import local_config

    if config.crop.source == "detector":
        raise PackageError(
            "local matching in a package needs the run's crops from boxes or whole photos "
            "(crop.source boxes or whole), not a detector's; package it with --no-local."
        )
    competition = load_competition(config.data, check_images=False)
    crops = make_crops(
        competition,
        config.crop,
        config.working,
        progress=progress,
        max_pixels=config.check.max_pixels,
    )
    local = local_config(config)
    paths = crops.paths("train", config.crop.kinds[0], table["image"])
    found = extract_paths(
        paths, None, local, f"{config.working}/cache/local", config.fusion.workers, progress
    )
    features = [quantised(f) for f in found]
    labels = table["individual_id"].to_numpy(dtype=str)
    photo_roles = photo_truths = None
    if roles is not None and truths is not None:
        photo_roles, photo_truths = np.empty(len(table), object), np.empty(len(table), object)
        photo_roles[source], photo_truths[source] = roles, truths
    queries, allowed, row_truths, fitted_on = calibration_rows(
        labels, groups, photo_roles, photo_truths, sample=300
    )
    sides = table["side"].to_numpy(dtype=object)
    known = np.array([s is not None and s == s for s in sides])
    other_flank = (
        known[None, :] & known[queries][:, None] & (sides[None, :] != sides[queries][:, None])
    )
    # each photo's best row (mirrored rows when the gallery holds them) per query photo
    first = np.unique(source, return_index=True)[1]
    sims = np.asarray(vectors[first[queries]], np.float32) @ np.asarray(vectors, np.float32).T
    cosine = np.full((len(queries), len(table)), -np.inf, dtype=np.float32)
    np.maximum.at(cosine.T, source, sims.T)
    fusion = fit_fusion(
        cosine,
        table["image"].tolist(),
        labels,
        features,
        queries,
        allowed & ~other_flank,
        row_truths,
        fitted_on,
        local,
        config.fusion.shortlist,
        config.fusion.workers,
        progress,
        config.fusion.pool,
    )
    members = {FUSION: json.dumps(fusion.to_json(), indent=2).encode()}
    for i, f in enumerate(features):
        members[f"{KEYPOINTS}/{i}.npz"] = pack_features(f)
    summary = {
        "source": fusion.source,
        "rows": fusion.rows,
        "weights": list(fusion.weights),
        "shortlist": fusion.shortlist,
        "score": local.score,
        "pool": fusion.pool,
    }
    return members, summary


def build_package(
    run: str | Path,
    out: Path,
    config: Config | None = None,
    side_regex: str | None = SIDE_REGEX,
    local: bool | None = None,
    progress: bool = False,
) -> Path:
    """Write the archive of run folder `run` (working/<run>) to `out`; returns `out`.

    Reads the run's resolved config.yaml (or `config`), models/fold0/best.pt, the
    fold-0 train embeddings, split.csv and metrics.json, and the competition's train.csv,
    train_images/ and catalogue.csv (when imported with `wildid import`). Gallery rows are
    stored as `config.embed.dtype`. `side_regex` reads each catalogue photo's flank from
    its source file name (photos.csv `side`); when it finds one, package.json keeps it
    (`side_regex`) so that identify reads a new photo's flank the same way. With `local`
    (default: the config's `fusion.local`), the package also carries the gallery's
    keypoints and the calibrated global + local fusion identify then ranks by
    (`gallery.fusion`; minutes: every gallery crop's keypoints, calibration rows matched).
    """
    import torch
    from safetensors.torch import save as save_safetensors

    from wildid.infer.embed import read_embeddings
    from wildid.layout import RunLayout
    from wildid.models.net import EmbeddingNet

    root = Path(run)
    layout = RunLayout(root.parent, Path("submissions"), root.name)
    if config is None:
        if not layout.config.is_file():
            raise PackageError(f"{root}: no config.yaml; is this a run folder (working/<run>)?")
        config = load_config(layout.config)
    checkpoint = layout.checkpoint(0)
    if not checkpoint.is_file():
        raise PackageError(f"{checkpoint}: not found; train the run first (`wildid run`).")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net = EmbeddingNet(config.model, pretrained="none")
    try:
        net.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise PackageError(f"{checkpoint}: does not fit the config's model: {err}") from err
    weights = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    try:
        embeddings, index = read_embeddings(layout.embeddings(0))
    except FileNotFoundError as err:
        raise PackageError(
            f"{layout.embeddings(0)}: no embeddings; run `wildid run` for this run first."
        ) from err
    train_rows = index[index["split"] == "train"]
    images = train_rows.loc[train_rows["view"] == "query", "image"].tolist()
    table = _gallery_table(config, images, side_regex)
    source = embeddings.gallery_source()
    vectors = np.asarray(embeddings.train, dtype=config.embed.dtype)
    labels = table["individual_id"].to_numpy(dtype=str)
    groups = np.array(
        [s if s is not None else f"row{i}" for i, s in enumerate(table["sighting"])], dtype=str
    )
    roles = truths = None
    if layout.split.is_file():
        split = pd.read_csv(layout.split, dtype=str, keep_default_na=False).set_index("image")
        roles = split.loc[table["image"], "role"].to_numpy()[source]
        truths = split.loc[table["image"], "val_truth"].to_numpy()[source]
    calibration, points = _calibrate(vectors, labels[source], roles, truths, groups[source])
    metrics = json.loads(layout.metrics().read_text()) if layout.metrics().is_file() else {}
    members: dict[str, bytes] = {}
    thumbs = []
    shas = []
    for i, image in enumerate(table["image"]):
        path = Path(config.data) / "train_images" / image
        shas.append(hashlib.sha256(path.read_bytes()).hexdigest())
        name = f"gallery/thumbs/{i}.jpg"
        members[name] = thumbnail(path)
        thumbs.append(name)
    table.insert(0, "id", np.arange(len(table)))
    table["sha256"], table["thumbnail"] = shas, thumbs
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "run": root.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "threshold": metrics.get("threshold"),
        "threshold_source": metrics.get("threshold_source"),
        # thresholds on the calibrated P(same) of the best candidate (identify's default
        # decision; `threshold` above is the run's own, on the raw cosine)
        "operating_points": None
        if points is None
        else {"map5": points.map5, "gmean": points.gmean},
        "operating_point": DEFAULT_POINT,
        "val_map5": metrics.get("val_map5"),
        "crop_mode": crop_mode(config),
        "crop": config.crop.model_dump(mode="json"),
        "image_size": config.embed_size,
        "mean_std": [list(v) for v in net.mean_std],
        "flip_tta": config.embed.flip_tta,
        "side_regex": side_regex if table["side"].notna().any() else None,
        "embedding_dim": int(vectors.shape[1]),
        "photos": len(table),
        "rows": len(vectors),
        "individuals": int(table["individual_id"].nunique()),
        "versions": versions(),
    }
    if config.fusion.local if local is None else local:
        local_members, meta["local"] = _local_members(
            config, table, vectors, source, groups, roles, truths, progress
        )
        members.update(local_members)
    members["package.json"] = json.dumps(meta, indent=2).encode()
    members["config.yaml"] = yaml.safe_dump(
        config.model_dump(mode="json"), sort_keys=False
    ).encode()
    members[WEIGHTS] = save_safetensors(weights, metadata={"format": "pt"})
    members["calibration.json"] = json.dumps(calibration.to_json(), indent=2).encode()
    members["gallery/embeddings.npy"] = _npy(vectors)
    members["gallery/rows.npy"] = _npy(np.asarray(source, dtype=np.int64))
    csv = table[PHOTO_COLUMNS].to_csv(index=False, lineterminator="\n")
    members["gallery/photos.csv"] = csv.encode()
    write_archive(members, Path(out))
    return Path(out)


def write_archive(members: dict[str, bytes], out: Path) -> Path:
    """The zip of `members` with manifest.json (SHA-256 and size of each), atomically."""
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "members": {n: {"sha256": _sha256(b), "size": len(b)} for n, b in sorted(members.items())},
    }
    with atomic_path(out, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2), zipfile.ZIP_DEFLATED)
        for name, data in sorted(members.items()):
            packed = name.endswith((".jpg", ".safetensors"))
            archive.writestr(name, data, zipfile.ZIP_STORED if packed else zipfile.ZIP_DEFLATED)
    return out


# --------------------------------------------------------------------------- checks


def _check_name(name: str, archive: Path) -> None:
    parts = name.split("/")
    if (
        name.startswith(("/", "\\"))
        or "\\" in name
        or re.match(r"^[A-Za-z]:", name)
        or ".." in parts
        or "\x00" in name
    ):
        raise UnsafePackageError(
            f"{archive}: member '{name}' would be written outside the package directory "
            "(absolute path or '..'); refused, nothing unpacked."
        )
    if not MEMBER_NAMES.fullmatch(name):
        hint = (
            " (weights must be model.safetensors)"
            if name.endswith((".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"))
            else ""
        )
        raise UnsafePackageError(
            f"{archive}: member '{name}' is not part of a wildid package{hint}; "
            "refused, nothing unpacked."
        )


def _check_member(info: zipfile.ZipInfo, archive: Path, max_member: int) -> None:
    _check_name(info.filename, archive)
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind and kind != stat.S_IFREG:
        what = "a symlink" if stat.S_ISLNK(mode) else "not a regular file (link or device)"
        raise UnsafePackageError(
            f"{archive}: member '{info.filename}' is {what}; refused, nothing unpacked."
        )
    if info.flag_bits & 0x1:
        raise UnsafePackageError(f"{archive}: member '{info.filename}' is encrypted; refused.")
    if info.file_size > max_member:
        raise UnsafePackageError(
            f"{archive}: member '{info.filename}' unpacks to {info.file_size} bytes, over the "
            f"limit of {max_member}; refused, nothing unpacked."
        )


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise PackageError(f"{path}: package not found.")
    if not zipfile.is_zipfile(path):
        raise PackageError(
            f"{path}: not a wildid package (a zip archive made by `wildid package`)."
        )
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise PackageError(f"{path}: damaged archive: {err}") from err


def _read_manifest(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        info = archive.getinfo(MANIFEST)
    except KeyError:
        raise PackageError(f"{path}: no {MANIFEST}; not a wildid package.") from None
    if info.file_size > 64 << 20:
        raise UnsafePackageError(f"{path}: {MANIFEST} is oversized; refused.")
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except (ValueError, zipfile.BadZipFile) as err:
        raise PackageError(f"{path}: unreadable {MANIFEST}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackageError(f"{path}: {MANIFEST} is not a wildid package manifest.")
    if manifest.get("version") != VERSION:
        raise PackageError(
            f"{path}: package format version {manifest.get('version')}; this wildid reads "
            f"version {VERSION}."
        )
    return manifest


def check_archive(
    archive: zipfile.ZipFile, path: Path, max_member: int = MAX_MEMBER, max_total: int = MAX_TOTAL
) -> dict[str, Any]:
    """Every check that needs no unpacking; returns the manifest. Raises PackageError."""
    infos = archive.infolist()
    names = [i.filename for i in infos]
    for info in infos:
        _check_member(info, path, max_member)
    if len(set(names)) != len(names):
        raise UnsafePackageError(f"{path}: a member name appears twice; refused.")
    total = sum(i.file_size for i in infos)
    if total > max_total:
        raise UnsafePackageError(
            f"{path}: members unpack to {total} bytes, over the limit of {max_total}; refused."
        )
    manifest = _read_manifest(archive, path)
    listed = manifest.get("members") or {}
    present = set(names) - {MANIFEST}
    if set(listed) != present:
        extra, missing = sorted(present - set(listed)), sorted(set(listed) - present)
        raise ChecksumError(
            f"{path}: members and manifest disagree (not in the manifest: {extra[:3]}; "
            f"missing: {missing[:3]}); the archive was altered. Refused."
        )
    for name in (WEIGHTS, "package.json", "config.yaml", "calibration.json"):
        if name not in present:
            raise PackageError(f"{path}: no {name}; not a complete wildid package.")
    return manifest


def _stream(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path
) -> Iterator[bytes]:
    """The member's bytes in chunks, refusing more than declared (or `limit`)."""
    size = 0
    with archive.open(info) as handle:
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            if size > min(limit, info.file_size):
                raise UnsafePackageError(
                    f"{path}: member '{info.filename}' unpacks to more than it declares; refused."
                )
            yield chunk


def _verify(digest: str, expected: dict[str, Any], name: str, path: Path) -> None:
    if digest != expected.get("sha256"):
        raise ChecksumError(
            f"{path}: member '{name}' does not match its SHA-256 in the manifest (the archive "
            "was altered or damaged); refused."
        )


def check_safetensors(path: Path, label: str) -> None:
    """Refuse a weights file that is not safetensors (a pickle, a torch zip checkpoint)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        size = path.stat().st_size
        if head[:2] == b"PK" or head[:1] == b"\x80":
            kind = "a torch zip checkpoint" if head[:2] == b"PK" else "a pickle"
            raise UnsafePackageError(
                f"{label}: weights are {kind}, not safetensors; pickles can run code when "
                "loaded, so they are refused."
            )
        if len(head) < 8:
            raise UnsafePackageError(f"{label}: weights are not a safetensors file; refused.")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, 100 << 20):
            raise UnsafePackageError(f"{label}: weights are not a safetensors file; refused.")
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise UnsafePackageError(
                f"{label}: weights are not a safetensors file; refused."
            ) from None
    if not isinstance(header, dict):
        raise UnsafePackageError(f"{label}: weights are not a safetensors file; refused.")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except Exception as err:  # safetensors raises its own error types
        raise UnsafePackageError(f"{label}: invalid safetensors weights: {err}") from err


def _check_npy(path: Path, label: str) -> None:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise UnsafePackageError(f"{label}: {path.name} needs pickle to load; refused.") from err
    if array.dtype.hasobject:
        raise UnsafePackageError(f"{label}: {path.name} holds objects; refused.")


def _check_npz(path: Path, label: str) -> None:
    from wildid.gallery.fusion import read_features

    try:
        read_features(path)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise UnsafePackageError(f"{label}: {path.name} is not a keypoints file: {err}") from err


# --------------------------------------------------------------------------- read


def inspect_package(path: str | Path) -> dict[str, Any]:
    """What `wildid package --inspect` prints: package.json, member count and sizes, gallery
    size, and whether every checksum matches (read in place, nothing unpacked)."""
    path = Path(path)
    if path.is_dir():
        package = _directory(path)
        manifest = json.loads((path / MANIFEST).read_text())
        bad = [n for n, m in manifest["members"].items() if _file_sha256(path / n) != m["sha256"]]
        meta = package.meta
    else:
        with _open_zip(path) as archive:
            manifest = check_archive(archive, path)
            bad = []
            for name, expected in manifest["members"].items():
                digest = hashlib.sha256()
                for chunk in _stream(archive, archive.getinfo(name), MAX_MEMBER, path):
                    digest.update(chunk)
                if digest.hexdigest() != expected["sha256"]:
                    bad.append(name)
            meta = json.loads(archive.read("package.json"))
    members = manifest["members"]
    return {
        "path": str(path),
        **{k: meta.get(k) for k in ("format", "version", "run", "created", "threshold")},
        "crop_mode": meta.get("crop_mode"),
        "image_size": meta.get("image_size"),
        "embedding_dim": meta.get("embedding_dim"),
        "gallery": {k: meta.get(k) for k in ("photos", "rows", "individuals")},
        "local": meta.get("local"),
        "versions": meta.get("versions"),
        "members": len(members),
        "bytes": sum(int(m["size"]) for m in members.values()),
        "checksums": "ok" if not bad else f"MISMATCH: {', '.join(bad[:5])}",
    }


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _directory(path: Path) -> Package:
    if not (path / MANIFEST).is_file() or not (path / "package.json").is_file():
        raise PackageError(
            f"{path}: not a package directory (no {MANIFEST}); give the archive made by "
            "`wildid package`, or the directory it was unpacked into."
        )
    return Package(path)


def default_workdir(archive: Path) -> Path:
    """Where an archive unpacks by default: beside it, named without `.zip`."""
    return (
        archive.with_suffix("")
        if archive.suffix == ".zip"
        else archive.with_name(archive.name + ".d")
    )


def open_package(
    path: str | Path,
    workdir: str | Path | None = None,
    max_member: int = MAX_MEMBER,
    max_total: int = MAX_TOTAL,
) -> Package:
    """A package directory: `path` itself when it is one, else the archive unpacked safely.

    Checks every member (names, kinds, sizes, manifest) before writing anything; then
    streams each member into a temporary file in the target, verifying its SHA-256 and
    size before renaming it into place; the weights are checked to be safetensors and
    the .npy files to load without pickle; manifest.json is written last. On any refusal
    the target is removed again (if this call created it) or emptied of what it wrote.
    """
    path = Path(path)
    if path.is_dir():
        return _directory(path)
    target = Path(workdir) if workdir is not None else default_workdir(path)
    with _open_zip(path) as archive:
        manifest = check_archive(archive, path, max_member, max_total)
        manifest_bytes = archive.read(MANIFEST)
        if target.exists():
            if not target.is_dir():
                raise PackageError(f"{target}: exists and is not a directory.")
            existing = target / MANIFEST
            if existing.is_file() and existing.read_bytes() == manifest_bytes:
                return Package(target)  # this archive, unpacked before: its catalogue lives on
            if any(target.iterdir()):
                raise PackageError(
                    f"{target}: not empty and not this package's unpacking; choose another "
                    "directory to unpack into."
                )
        created = not target.exists()
        target.mkdir(parents=True, exist_ok=True)
        base = target.resolve()
        written: list[Path] = []
        try:
            for name, expected in sorted(manifest["members"].items()):
                dest = (target / name).resolve()
                if not dest.is_relative_to(base):  # belt and braces: names were checked
                    raise UnsafePackageError(f"{path}: member '{name}' escapes the target.")
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.part")
                written.append(tmp)
                digest = hashlib.sha256()
                with open(tmp, "xb") as handle:
                    for chunk in _stream(archive, archive.getinfo(name), max_member, path):
                        digest.update(chunk)
                        handle.write(chunk)
                _verify(digest.hexdigest(), expected, name, path)
                os.replace(tmp, dest)
                written.append(dest)
            check_safetensors(target / WEIGHTS, str(path))
            for name in ("gallery/embeddings.npy", "gallery/rows.npy"):
                if (target / name).is_file():
                    _check_npy(target / name, str(path))
            for name in manifest["members"]:
                if name.endswith(".npz"):
                    _check_npz(target / name, str(path))
            with atomic_path(target / MANIFEST) as tmp:
                tmp.write_bytes(manifest_bytes)
        except BaseException:
            if created:
                shutil.rmtree(target, ignore_errors=True)
            else:
                for item in written:
                    item.unlink(missing_ok=True)
            raise
    return Package(target)


def resolve_package(path: str | Path) -> Package:
    """A Package from a directory, an archive (unpacked beside it), or a Package."""
    if isinstance(path, Package):
        return path
    return open_package(path)
