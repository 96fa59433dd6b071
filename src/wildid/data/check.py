"""`wildid check DATA`: read every photo of a competition folder once and list what is wrong.

Each train and test photo is read whole (its SHA-256) and decoded once, in a small thread
pool (Pillow's decoders and hashlib release the GIL). What is found is cached per photo in
`WORKING/check/<key>.csv` (key: the competition folder's resolved path), with the photo's
size and mtime_ns: a second check reads only new or replaced photos. The cache lives in
the working folder, never in DATA (which may be read-only, e.g. /kaggle/input).

Problems (one row each in the report, naming the photo and, for a catalogue imported with
`wildid import`, the catalogue photo it came from, read from DATA/catalogue.csv):

    unreadable  error    missing, zero bytes, or not an image (e.g. text named .jpg)
    truncated   error    the data ends before the image does: Pillow decodes it fully with
                         `ImageFile.LOAD_TRUNCATED_IMAGES` off, which raises where libjpeg
                         only prints "Premature end of JPEG file" and OpenCV returns grey
    too_large   error    the header's width x height is above `check.max_pixels`
                         (MAX_PIXELS, 50 megapixels: far below OpenCV's
                         CV_IO_MAX_IMAGE_PIXELS, 2^30, whose assertion it pre-empts); read
                         from the header alone, the photo is never decoded
    duplicate   error    the same bytes (SHA-256) under two individuals (train.csv, and
                         solution.csv where present); a warning on the test side, whose
                         labels only score the run
    channels    warning  grayscale, alpha, CMYK, palette-less 1-bit, or 16-bit samples:
                         readable (converted to 8-bit RGB), listed because such photos
                         often come from another camera or pipeline

`apply_policy` is what `wildid run` / `pipeline.prepare` do with a report: `check.on_bad`
stop (default) refuses any error; skip drops the train photos with errors from the run
(listed, the table written beside the cache) and still refuses bad *test* photos, since
every test photo needs a row in the submission and there is nothing to predict from.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageFile, UnidentifiedImageError

from wildid import cache
from wildid.data.competition import Competition, DataError, load_competition
from wildid.io import write_csv

MAX_PIXELS = 50_000_000  # photos above this (width x height, from the header) are refused
CACHE_COLUMNS = [
    "split",
    "image",
    "size",
    "mtime_ns",
    "sha256",
    "format",
    "mode",
    "bits",
    "width",
    "height",
    "decoded",
    "error",
]
PROBLEM_COLUMNS = ["split", "image", "source", "problem", "severity", "detail"]
ODD_MODES = {
    "1": "1-bit",
    "L": "grayscale",
    "LA": "grayscale with alpha",
    "La": "grayscale with alpha",
    "RGBA": "alpha channel",
    "RGBa": "alpha channel",
    "PA": "palette with alpha",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
    "I": "32-bit integer samples",
    "F": "floating-point samples",
}


class CheckError(DataError):
    """Photos that would poison training (or a test photo that cannot be predicted)."""


class PhotoError(DataError):
    """One photo cannot be used: unreadable, truncated or too large."""


# --- one photo --------------------------------------------------------------------------


def _text_start(data: bytes) -> str:
    head = data[:24]
    return repr(head)[2:-1] if head else ""


def inspect_photo(path: str | Path, max_pixels: int = MAX_PIXELS, digest: bool = True) -> dict:
    """What one photo is: size, mtime, sha256, format, mode, bits, pixel size, decode error.

    The photo is decoded fully (JPEGs at 1/8 scale, which still reads every byte of the
    entropy-coded data, so a truncation is found) unless its header claims more than
    `max_pixels`. `error` is '' or 'unreadable: ...' / 'truncated: ...'.
    """
    path = Path(path)
    facts: dict[str, Any] = dict.fromkeys(CACHE_COLUMNS[2:], "")
    facts.update(size=-1, mtime_ns=-1, bits=0, width=0, height=0, decoded=0)
    try:
        stat = path.stat()
        data = path.read_bytes() if path.is_file() else None
    except OSError as err:
        facts["error"] = f"unreadable: {err.strerror or err}"
        return facts
    if data is None:
        facts["error"] = "unreadable: not a file"
        return facts
    facts.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    if digest:
        facts["sha256"] = hashlib.sha256(data).hexdigest()
    if not data:
        facts["error"] = "unreadable: zero bytes"
        return facts
    facts["error"] = _decode(data, facts, max_pixels)
    return facts


SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers: the size


def header_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from a PNG's IHDR or a JPEG's frame header; no decoding.

    Read by wildid itself because Pillow refuses to open a PNG whose header is all there
    is, and checks its own (much higher) decompression-bomb limit only after opening.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return "PNG", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in SOF_MARKERS:
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return "JPEG", width, height
        if marker == 0xDA:  # scan data before any frame header
            return None
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def _decode(data: bytes, facts: dict[str, Any], max_pixels: int) -> str:
    header = header_size(data)
    if header is not None:
        facts["format"], facts["width"], facts["height"] = header
        if header[1] * header[2] > max_pixels:
            return ""  # judged too large by `problems_of`; never opened
    try:
        with Image.open(io.BytesIO(data)) as image:
            facts.update(format=image.format or "", mode=image.mode)
            facts["width"], facts["height"] = image.size
            facts["bits"] = _bits(data, image)
            if image.size[0] * image.size[1] > max_pixels:
                return ""  # judged too large by `problems_of`; never decoded
            if image.format == "JPEG":
                image.draft(image.mode, (image.size[0] // 8 or 1, image.size[1] // 8 or 1))
            _load_strict(image)
            facts["decoded"] = 1
    except Image.DecompressionBombError as err:
        facts["error"] = ""
        facts["width"] = facts["height"] = 0
        return f"too large: {err}"
    except (UnidentifiedImageError, ImportError):
        # ImportError: once ultralytics is imported, its patch of Image.open answers a file
        # Pillow cannot identify by importing the optional pi_heif (HEIC), absent here.
        if header is not None:  # a valid start, then nothing Pillow can read
            return f"truncated: {header[0]} header without image data ({len(data)} bytes)"
        return f"unreadable: not an image (starts with '{_text_start(data)}')"
    except (OSError, SyntaxError, ValueError) as err:
        if facts["width"] or "truncat" in str(err).lower():
            return f"truncated: {err} ({len(data)} bytes)"
        return f"unreadable: {err}"
    return ""


def _load_strict(image: Image.Image) -> None:
    """Decode with truncation an error whatever another library set the global flag to."""
    # False is Pillow's default and nothing wildid uses turns it on; a library that did
    # would hide truncation from every later reader as well.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    image.load()


def _bits(data: bytes, image: Image.Image) -> int:
    if image.format == "PNG" and len(data) > 24:
        return data[24]  # IHDR bit depth (per sample)
    if image.mode.startswith("I;16"):
        return 16
    return 8


def problems_of(facts: dict[str, Any], max_pixels: int = MAX_PIXELS) -> list[tuple[str, str, str]]:
    """(problem, severity, detail) of one photo's facts, duplicates aside."""
    found = []
    error = str(facts.get("error") or "")
    if error:
        kind, _, detail = error.partition(": ")
        found.append(("too_large" if kind == "too large" else kind, "error", detail))
    pixels = int(facts["width"]) * int(facts["height"])
    if pixels > max_pixels:
        found.append(
            (
                "too_large",
                "error",
                f"{facts['width']}x{facts['height']} = {pixels / 1e6:.0f} megapixels in its "
                f"header, above check.max_pixels={max_pixels}",
            )
        )
    if not error:
        mode, bits = str(facts.get("mode") or ""), int(facts.get("bits") or 8)
        odd = ODD_MODES.get(mode) or ("16-bit samples" if bits > 8 or "16" in mode else None)
        if odd:
            found.append(("channels", "warning", f"{odd} (mode {mode}, {bits}-bit)"))
    return found


def photo_problem(path: str | Path, max_pixels: int = MAX_PIXELS) -> str | None:
    """One line saying why a photo cannot be cropped (unreadable, truncated, too large)."""
    errors = [
        f"{problem}: {detail}"
        for problem, severity, detail in problems_of(inspect_photo(path, max_pixels, False))
        if severity == "error"
    ]
    return "; ".join(errors) or None


def require_photo(path: str | Path, max_pixels: int = MAX_PIXELS) -> None:
    """Raise PhotoError naming the photo when it is unreadable, truncated or too large."""
    problem = photo_problem(path, max_pixels)
    if problem:
        raise PhotoError(
            f"{path}: {problem}. Replace or re-download the photo, or run `wildid check` "
            "on the competition folder and set check.on_bad=skip to drop bad train photos."
        )


# --- a competition ----------------------------------------------------------------------


@dataclass(frozen=True)
class CheckReport:
    """Every problem of a competition folder's photos (PROBLEM_COLUMNS), one row each."""

    root: Path
    problems: pd.DataFrame
    photos: int
    reused: int  # photos whose cached facts were still valid
    seconds: float
    cache: Path

    @property
    def errors(self) -> pd.DataFrame:
        return self.problems[self.problems["severity"] == "error"]

    def bad(self, split: str) -> set[str]:
        errors = self.errors
        return set(errors.loc[errors["split"] == split, "image"])

    def table(self) -> str:
        if self.problems.empty:
            return "no problems"
        return self.problems.to_string(index=False)

    def summary(self) -> str:
        counts = self.problems.groupby(["severity", "problem"]).size()
        listed = ", ".join(f"{n} {p} ({s})" for (s, p), n in counts.items()) or "no problems"
        return (
            f"check {self.root}: {self.photos} photos ({self.reused} cached) in "
            f"{self.seconds:.1f} s: {listed}"
        )


def _optional_table(path: Path) -> pd.DataFrame | None:
    """A CSV of wildid's own (strings), or None when absent or unreadable: then unused."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None


def _sources(root: Path) -> dict[str, str]:
    """Output image -> catalogue photo, for a folder made by `wildid import`."""
    table = _optional_table(root / "catalogue.csv")
    if table is None or not {"image", "source"} <= set(table.columns):
        return {}
    return dict(zip(table["image"], table["source"], strict=True))


def _read_cache(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    table = _optional_table(path)
    if table is None or list(table.columns) != CACHE_COLUMNS:
        return {}
    rows = table.to_dict("records")
    return {(r["split"], r["image"]): r for r in rows}


def _valid(row: dict[str, Any] | None, stamp: tuple[int, int] | None, max_pixels: int) -> bool:
    if row is None or stamp is None:
        return False
    same = (int(row["size"]), int(row["mtime_ns"])) == stamp
    # A photo skipped as too large must be decoded after all once the limit is raised.
    judged = (
        int(row["decoded"]) or row["error"] or int(row["width"]) * int(row["height"]) > (max_pixels)
    )
    return same and bool(judged)


def check_competition(
    competition: Competition,
    working: str | Path,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """Read every photo once (or its cached facts) and list every problem."""
    start = time.perf_counter()
    root = competition.root
    cache_path = Path(working) / "check" / f"{cache.fingerprint(str(root.resolve()))}.csv"
    previous = _read_cache(cache_path)
    jobs = [
        (split, image, competition.image_path(split, image))
        for split, table in (("train", competition.train), ("test", competition.test))
        for image in table["image"]
    ]
    facts: dict[tuple[str, str], dict[str, Any]] = {}
    todo = []
    for split, image, path in jobs:
        old = previous.get((split, image))
        if _valid(old, cache.file_stamp(path), max_pixels):
            facts[split, image] = old
        else:
            todo.append((split, image, path))
    reused = len(facts)
    # Headers above Pillow's warning size are judged by max_pixels, not decoded: no warning.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    if todo:
        workers = workers or min(4, os.cpu_count() or 1)
        if progress:
            print(f"check: reading {len(todo)} photos ({reused} cached)", file=sys.stderr)
        with ThreadPoolExecutor(workers) as pool:
            found = pool.map(lambda job: inspect_photo(job[2], max_pixels), todo)
            for (split, image, _), row in zip(todo, found, strict=True):
                facts[split, image] = {"split": split, "image": image, **row}
    if todo or len(previous) != len(facts):
        rows = [facts[split, image] for split, image, _ in jobs]
        write_csv(pd.DataFrame(rows, columns=CACHE_COLUMNS), cache_path)
    problems = _problems(competition, facts, max_pixels, _sources(root))
    return CheckReport(
        root=root,
        problems=problems,
        photos=len(jobs),
        reused=reused,
        seconds=time.perf_counter() - start,
        cache=cache_path,
    )


def _problems(
    competition: Competition,
    facts: dict[tuple[str, str], dict[str, Any]],
    max_pixels: int,
    sources: dict[str, str],
) -> pd.DataFrame:
    rows = []

    def add(split: str, image: str, problem: str, severity: str, detail: str) -> None:
        photo = f"{split}_images/{image}"
        rows.append((split, image, sources.get(image, photo), problem, severity, detail))

    for (split, image), row in facts.items():
        for problem in problems_of(row, max_pixels):
            add(split, image, *problem)
    labels = {("train", i): ind for i, ind in competition.train[["image", "individual_id"]].values}
    if competition.has_solution:
        labels.update(
            {("test", i): ind for i, ind in competition.test[["image", "individual_id"]].values}
        )
    by_hash: dict[str, list[tuple[str, str]]] = {}
    for key, row in facts.items():
        if row["sha256"] and int(row["size"]) > 0 and key in labels:
            by_hash.setdefault(str(row["sha256"]), []).append(key)
    for keys in by_hash.values():
        if len({labels[k] for k in keys}) < 2:
            continue
        for split, image in keys:
            others = [
                f"{sources.get(i, f'{s}_images/{i}')} ({labels[s, i]})"
                for s, i in keys
                if (s, i) != (split, image)
            ]
            detail = (
                f"same bytes as {', '.join(others)}, but filed as {labels[split, image]}: "
                "one photo under two individuals"
            )
            add(split, image, "duplicate", "error" if split == "train" else "warning", detail)
    table = pd.DataFrame(rows, columns=PROBLEM_COLUMNS)
    return table.sort_values(["severity", "split", "source", "problem"], ignore_index=True)


# --- policy -------------------------------------------------------------------------------


def _first(errors: pd.DataFrame) -> str:
    row = errors.iloc[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{row['source']}: {row['problem']}: {row['detail']}{more}"


def apply_policy(
    competition: Competition, report: CheckReport, on_bad: str = "stop", progress: bool = True
) -> Competition:
    """The competition to run on: unchanged, or without its bad train photos (on_bad=skip).

    Raises CheckError, before anything is trained, for any error under on_bad=stop, and
    for bad test photos under either policy (a submission needs a row for each test photo).
    """
    errors = report.errors
    if errors.empty:
        return competition
    listing = report.cache.with_name(report.cache.stem + "-problems.csv")
    write_csv(report.problems, listing)
    test = errors[errors["split"] == "test"]
    if on_bad != "skip":
        raise CheckError(
            f"{len(errors)} photo problem(s) would poison training: {_first(errors)}. "
            f"All listed in {listing} (or run `wildid check {report.root}`); replace the "
            "photos, or set check.on_bad=skip to drop bad train photos from the run."
        )
    if not test.empty:
        raise CheckError(
            f"test photo {_first(test)}: a test photo cannot be skipped (the submission needs "
            f"a prediction for each); replace it. All problems listed in {listing}."
        )
    bad = report.bad("train")
    train = competition.train[~competition.train["image"].isin(bad)].reset_index(drop=True)
    if train.empty:
        raise CheckError(f"{report.root}: every train photo has a problem; see {listing}.")
    if progress:
        print(
            f"warning: check.on_bad=skip: {len(bad)} bad train photo(s) left out of this run "
            f"(listed in {listing}); first {_first(errors)}",
            file=sys.stderr,
        )
    return replace(competition, train=train)


def check_folder(
    data: str | Path,
    working: str | Path,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """`wildid check DATA`: the tables must load; every listed photo is checked."""
    competition = load_competition(data, check_images=False)
    return check_competition(competition, working, max_pixels, workers, progress)
