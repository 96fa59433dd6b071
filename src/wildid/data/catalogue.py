"""Import a folder-per-individual photo catalogue into the competition layout.

Most photo-identification catalogues are kept as one folder per known animal::

    SRC/<individual_id>/**/<photo>                  plain catalogue
    SRC/<split>/<individual_id>/**/<photo>          published pre-split (train/test/...)

`import_catalogue` turns either into the Happywhale layout (see `competition.py`) so the
whole pipeline runs on it unchanged, plus `catalogue.csv` mapping every output image back
to its source photo and sighting.

Why the split is made here rather than kept from the source: a published split is often
disjoint by individual (nyala's is), which tests only "new individual" detection. The
competition mixes known individuals photographed again with new ones, so we merge any
pre-split containers and draw both kinds of test photo ourselves.

Leakage: photos of one sighting (encounter) are near duplicates, so the split unit is an
(individual, group) pair, where the group is read from the file name by `ImportSpec.group`.
All photos of one individual in one sighting land on the same side. The *raw* group is
recorded in catalogue.csv: where one sighting number is shared by several individuals
photographed together, those are different animals, and sending them to different sides
leaks nothing about either one's identity (a shared background can only mislead a model
towards the wrong animal), so the split does not tie them together.

Links and duplicates: symbolic links (to photos or folders) are not followed unless
`ImportSpec.follow_links`; skipped ones are counted in one warning line. When followed, a
link back into a folder already walked (a loop) is an error naming the link, and a photo
reached twice through links is imported once. The same bytes (SHA-256) filed under two
individuals put one photo under two identities, possibly across train and test: an error
naming both catalogue photos unless `ImportSpec.duplicates="keep"`. Every message names
the catalogue path, never the hashed output name.
"""

from __future__ import annotations

import filecmp
import hashlib
import math
import os
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from wildid.data.competition import NEW_INDIVIDUAL, DataError, write_tables
from wildid.io import atomic_path, write_csv

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLIT_FOLDERS = frozenset({"train", "test", "val", "valid", "validation", "gallery", "query"})
LINK_MODES = ("copy", "hardlink", "symlink")
CATALOGUE_COLUMNS = ("image", "source", "individual_id", "group", "split")
NAME_HEX = 14  # 56 bits of sha1: collisions are checked, and unlikely below ~10^8 photos


@dataclass(frozen=True)
class ImportSpec:
    """How to read and split a catalogue.

    group: regex searched in each file name (not its path); group 1, or the whole match
        when the regex has no group, is the sighting id. None or "" makes every photo its
        own group (use when file names carry no sighting).
    new_fraction: fraction of individuals held out whole as new (all their photos in test),
        drawn uniformly among all individuals so single-sighting animals can be new too.
    test_fraction: fraction of each remaining individual's groups sent to test; only
        individuals with >= 2 groups contribute, and at least one group stays in train.
    seed: seeds the one generator that draws both held-out individuals and test groups.
    species: species column value; default: the SRC folder's name.
    link: how images reach OUT: "copy", "hardlink" (same filesystem) or "symlink".
    follow_links: follow symbolic links found in SRC (off: they are skipped and counted).
    duplicates: "error" (default): the same bytes under two individuals stop the import;
        "keep": they are imported and listed in a warning.
    """

    group: str | None = None
    new_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    species: str | None = None
    link: str = "copy"
    follow_links: bool = False
    duplicates: str = "error"


DUPLICATE_MODES = ("error", "keep")


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote; `groups` counts (individual, group) pairs, the split unit."""

    root: Path
    individuals: int
    train_images: int
    test_images: int
    new_individuals: int
    groups: int


@dataclass(frozen=True)
class _Photo:
    source: str  # path relative to SRC, POSIX
    individual: str
    group: str


def import_catalogue(
    src: str | Path,
    out: str | Path,
    spec: ImportSpec = ImportSpec(),
    progress: bool = True,
) -> ImportSummary:
    """Import SRC (folder per individual) into OUT (competition layout) and summarise it.

    Re-running over an existing OUT is safe: identical images are skipped, images that
    changed side are removed from the other folder, and the tables are replaced atomically.
    """
    src, out = Path(src), Path(out)
    _check_spec(spec)
    _check_folders(src, out)
    pattern = _compile_group(spec.group)
    species = _species(spec, src)
    walker = _Walker(src, spec.follow_links)
    photos = [_photo(src, path, individual, pattern) for path, individual in walker.find()]
    if not photos:
        raise DataError(
            f"{src}: no images found (extensions {sorted(IMAGE_EXTENSIONS)}). Expected "
            "SRC/<individual_id>/<photo> or SRC/<train|test>/<individual_id>/<photo>."
            + walker.skipped_note()
        )
    walker.warn()
    _check_duplicates(src, photos, spec.duplicates)
    catalogue = _split(photos, spec, src)
    _place_images(src, out, catalogue, spec.link, progress)
    _write_outputs(out, catalogue, species)
    return _summary(out, catalogue)


# --- checks -------------------------------------------------------------------------------


def _check_spec(spec: ImportSpec) -> None:
    for name in ("new_fraction", "test_fraction"):
        value = getattr(spec, name)
        if not 0.0 <= value < 1.0:
            raise DataError(f"ImportSpec.{name}={value}: must be in [0, 1).")
    if spec.link not in LINK_MODES:
        raise DataError(f"ImportSpec.link='{spec.link}': must be one of {list(LINK_MODES)}.")
    if spec.duplicates not in DUPLICATE_MODES:
        raise DataError(
            f"ImportSpec.duplicates='{spec.duplicates}': must be one of {list(DUPLICATE_MODES)}."
        )


def _check_folders(src: Path, out: Path) -> None:
    if not src.is_dir():
        raise DataError(
            f"{src}: catalogue folder not found. Pass a folder holding one sub-folder of "
            "photos per individual."
        )
    # OUT inside SRC would be re-imported as an individual on the next run.
    if out.resolve().is_relative_to(src.resolve()):
        raise DataError(f"{out}: output folder is inside the catalogue {src}; put it elsewhere.")


def _compile_group(group: str | None) -> re.Pattern[str] | None:
    if not group:
        return None
    try:
        return re.compile(group)
    except re.error as err:
        raise DataError(f"group regex '{group}' is invalid: {err}.") from err


def _species(spec: ImportSpec, src: Path) -> str:
    species = spec.species if spec.species is not None else src.resolve().name
    if not species.strip():
        raise DataError(f"species '{species}' is empty; pass a species name.")
    return species


def _check_individual(folder: Path) -> str:
    """Reject ids that would corrupt the space-separated predictions column."""
    name = folder.name
    if not name.strip() or any(ch.isspace() for ch in name):
        raise DataError(
            f"{folder}: individual folder name '{name}' is empty or holds whitespace, which "
            "breaks the space-separated predictions; rename the folder."
        )
    if name == NEW_INDIVIDUAL:
        raise DataError(
            f"{folder}: '{NEW_INDIVIDUAL}' is reserved for unseen individuals; rename the folder."
        )
    return name


# --- discovery ----------------------------------------------------------------------------


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and _visible(path) and path.is_file()


class _Walker:
    """Finds (photo, individual) pairs; skips or follows links, and catches link loops."""

    def __init__(self, src: Path, follow_links: bool) -> None:
        self.src = src
        self.follow = follow_links
        self.skipped: list[Path] = []  # links not followed
        self.twice: list[tuple[Path, Path]] = []  # (link, first path) of a photo seen before
        self._folders: dict[str, Path] = {os.path.realpath(src): src}
        self._files: dict[str, tuple[Path, str]] = {}

    def _keep(self, path: Path) -> bool:
        if path.is_symlink() and not self.follow:
            self.skipped.append(path)
            return False
        return True

    def _enter(self, folder: Path) -> bool:
        """Whether to walk `folder`; a folder reached a second time through a link is a loop."""
        real = os.path.realpath(folder)
        first = self._folders.get(real)
        if first is not None and first != folder:
            raise DataError(
                f"{folder}: link loop or second path to {first} (the link points to "
                f"{os.path.realpath(folder)}); its photos would be imported twice. Remove the "
                "link, or import without --follow-links."
            )
        self._folders[real] = folder
        return True

    def _subfolders(self, folder: Path) -> list[Path]:
        """Visible sub-folders, sorted; a loose image here has no individual: an error."""
        entries = [p for p in sorted(folder.iterdir()) if self._keep(p)]
        loose = [p for p in entries if _is_image(p)]
        if loose:
            raise DataError(
                f"{loose[0]}: image outside any individual folder; move it into "
                f"{folder}/<individual_id>/ (or delete it)."
            )
        return [p for p in entries if p.is_dir() and _visible(p) and self._enter(p)]

    def _individual_folders(self) -> list[Path]:
        """Individual folders, looking one level deeper when SRC holds only split folders."""
        src = self.src
        top = self._subfolders(src)
        splits = [p for p in top if p.name.lower() in SPLIT_FOLDERS]
        if not top or not splits:
            return top
        if len(splits) < len(top):
            other = next(p for p in top if p.name.lower() not in SPLIT_FOLDERS)
            raise DataError(
                f"{src}: mixes split folders ({splits[0].name}) with individual folders "
                f"({other.name}); put every individual under a split folder or none."
            )
        return [folder for split in splits for folder in self._subfolders(split)]

    def _images_under(self, folder: Path, individual: str) -> Iterable[Path]:
        """Every visible image below `folder`, in sorted order, skipping hidden folders."""
        for root, dirs, files in os.walk(folder, followlinks=self.follow):
            here = Path(root)
            dirs[:] = [
                d
                for d in sorted(dirs)
                if not d.startswith(".") and self._keep(here / d) and self._enter(here / d)
            ]
            for name in sorted(files):
                path = here / name
                if not _is_image(path) or not self._keep(path):
                    continue
                real = os.path.realpath(path)
                seen = self._files.get(real)
                if seen is not None and seen[1] == individual:
                    self.twice.append((path, seen[0]))
                    continue  # one photo reached twice through links: imported once
                self._files.setdefault(real, (path, individual))
                yield path

    def find(self) -> list[tuple[Path, str]]:
        """(photo path, individual id) pairs; one id under two split folders is one animal."""
        found = []
        for folder in self._individual_folders():
            individual = _check_individual(folder)
            found.extend((path, individual) for path in self._images_under(folder, individual))
        return found

    def skipped_note(self) -> str:
        if not self.skipped:
            return ""
        return (
            f" {len(self.skipped)} symbolic link(s) were not followed (first {self.skipped[0]}); "
            "pass --follow-links to import them."
        )

    def warn(self) -> None:
        if self.skipped:
            print(f"warning: import:{self.skipped_note()}", file=sys.stderr)
        if self.twice:
            link, first = self.twice[0]
            print(
                f"warning: import: {len(self.twice)} photo(s) reached twice through links, "
                f"imported once (first {link}, already {first}).",
                file=sys.stderr,
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise DataError(f"{path}: cannot read the photo ({err.strerror or err}).") from err
    return digest.hexdigest()


def _check_duplicates(src: Path, photos: list[_Photo], mode: str) -> None:
    """The same bytes under two individuals: an error naming both photos (or a warning)."""
    by_hash: dict[str, list[_Photo]] = {}
    for photo in photos:
        by_hash.setdefault(_sha256(src / photo.source), []).append(photo)
    clashes = [group for group in by_hash.values() if len({p.individual for p in group}) > 1]
    if not clashes:
        return
    first = clashes[0]
    listed = " and ".join(f"{src / p.source} ({p.individual})" for p in first[:3])
    message = (
        f"{listed} hold the same bytes: one photo filed under {len({p.individual for p in first})} "
        f"individuals ({len(clashes)} such photo(s) in all), which would train one animal as "
        "two and can put the same photo in train and test"
    )
    if mode == "error":
        raise DataError(
            f"{message}. Remove the wrong copy (or the link), or pass --allow-duplicates to "
            "import them anyway."
        )
    print(f"warning: import: {message}.", file=sys.stderr)


def _photo(src: Path, path: Path, individual: str, pattern: re.Pattern[str] | None) -> _Photo:
    source = path.relative_to(src).as_posix()
    return _Photo(source=source, individual=individual, group=_group(path, source, pattern))


def _group(path: Path, source: str, pattern: re.Pattern[str] | None) -> str:
    """The sighting id read from the file name; without a regex, the photo's own source."""
    if pattern is None:
        return source
    match = pattern.search(path.name)
    value = (match.group(1) if pattern.groups else match.group(0)) if match else None
    if not value:
        raise DataError(
            f"{path}: group regex '{pattern.pattern}' does not match file name "
            f"'{path.name}'. Fix the regex, or pass --group '' to make every photo its own "
            "group."
        )
    return value


# --- split --------------------------------------------------------------------------------


def _round_half_up(x: float) -> int:
    """Round .5 up (Python's round() sends 2.5 to 2, a surprise in a fraction of groups)."""
    return math.floor(x + 0.5)


def _split(photos: list[_Photo], spec: ImportSpec, src: Path) -> pd.DataFrame:
    """The catalogue table with a train/test split column, sorted by source path."""
    frame = pd.DataFrame(
        {
            "image": [_image_name(p.source) for p in photos],
            "source": [p.source for p in photos],
            "individual_id": [p.individual for p in photos],
            "group": [p.group for p in photos],
        }
    )
    clash = frame["image"].duplicated(keep=False)
    if clash.any():
        raise DataError(f"{src}: output name clash for {list(frame.loc[clash, 'source'])}.")
    test_units = _test_units(frame, spec)
    units = zip(frame["individual_id"], frame["group"], strict=True)
    frame["split"] = ["test" if unit in test_units else "train" for unit in units]
    frame = frame.sort_values("source", ignore_index=True)[list(CATALOGUE_COLUMNS)]
    _check_sides(frame, src)
    return frame


def _test_units(frame: pd.DataFrame, spec: ImportSpec) -> set[tuple[str, str]]:
    """(individual, group) pairs that go to test: held-out animals whole, then some groups."""
    rng = np.random.default_rng(spec.seed)
    groups = frame.groupby("individual_id")["group"].agg(lambda g: sorted(set(g))).sort_index()
    individuals = list(groups.index)
    n_new = min(_round_half_up(spec.new_fraction * len(individuals)), len(individuals) - 1)
    new = {individuals[i] for i in rng.permutation(len(individuals))[:n_new]}
    units = {(ind, g) for ind in new for g in groups[ind]}
    for individual in individuals:
        own = groups[individual]
        if individual in new or len(own) < 2 or spec.test_fraction == 0:
            continue
        k = min(max(_round_half_up(spec.test_fraction * len(own)), 1), len(own) - 1)
        units.update((individual, own[i]) for i in rng.permutation(len(own))[:k])
    return units


def _check_sides(frame: pd.DataFrame, src: Path) -> None:
    if not (frame["split"] == "test").any():
        raise DataError(
            f"{src}: the split left no test photos (too few individuals or sightings for "
            "new_fraction/test_fraction); raise them or add photos."
        )


def _image_name(source: str) -> str:
    """Flat, unique and stable across runs: a hash of the source path, original extension."""
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:NAME_HEX]
    return digest + Path(source).suffix.lower()


# --- images -------------------------------------------------------------------------------


def _place_images(src: Path, out: Path, catalogue: pd.DataFrame, link: str, progress: bool) -> None:
    """Copy or link every photo into its split folder, atomically, skipping identical ones."""
    rows = list(zip(catalogue["image"], catalogue["source"], catalogue["split"], strict=True))
    for split in ("train", "test"):
        (out / f"{split}_images").mkdir(parents=True, exist_ok=True)
    for image, source, split in tqdm(rows, desc="import", unit="img", disable=not progress):
        other = "test" if split == "train" else "train"
        # A re-run with another seed may move a photo across: drop the stale copy.
        (out / f"{other}_images" / image).unlink(missing_ok=True)
        _place(src / source, out / f"{split}_images" / image, link)


def _place(source: Path, target: Path, link: str) -> None:
    if _already_there(source, target, link):
        return
    with atomic_path(target) as tmp:
        if link == "copy":
            try:
                shutil.copy2(source, tmp)
            except OSError as err:
                raise DataError(
                    f"{source}: cannot copy the photo to {target} ({err.strerror or err})."
                ) from err
        else:
            tmp.unlink()
            try:
                if link == "hardlink":
                    os.link(source, tmp)
                else:
                    os.symlink(source.resolve(), tmp)
            except OSError as err:
                raise DataError(
                    f"{source}: cannot {link} it to {target} ({err}); use link='copy'."
                ) from err


def _already_there(source: Path, target: Path, link: str) -> bool:
    """True when `target` already is what this link mode would make of `source`."""
    if link == "symlink":
        return target.is_symlink() and Path(os.readlink(target)) == source.resolve()
    if target.is_symlink() or not target.is_file():
        return False
    if link == "hardlink":
        return os.path.samefile(source, target)
    return filecmp.cmp(source, target, shallow=True)


# --- tables -------------------------------------------------------------------------------


def _write_outputs(out: Path, catalogue: pd.DataFrame, species: str) -> None:
    """Competition tables (rows sorted by image, as Kaggle's are) and catalogue.csv."""
    table = catalogue.assign(species=species).sort_values("image", ignore_index=True)
    train = table[table["split"] == "train"].reset_index(drop=True)
    test = table[table["split"] == "test"].reset_index(drop=True)
    write_tables(out, train, test)
    write_csv(catalogue, out / "catalogue.csv")


def _summary(out: Path, catalogue: pd.DataFrame) -> ImportSummary:
    train = catalogue[catalogue["split"] == "train"]
    test = catalogue[catalogue["split"] == "test"]
    new = set(test["individual_id"]) - set(train["individual_id"])
    pairs = catalogue[["individual_id", "group"]].drop_duplicates()
    return ImportSummary(
        root=out,
        individuals=int(catalogue["individual_id"].nunique()),
        train_images=len(train),
        test_images=len(test),
        new_individuals=len(new),
        groups=len(pairs),
    )
