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
"""

from __future__ import annotations

import filecmp
import hashlib
import math
import os
import re
import shutil
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
    """

    group: str | None = None
    new_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    species: str | None = None
    link: str = "copy"


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
    photos = [_photo(src, path, individual, pattern) for path, individual in _find(src)]
    if not photos:
        raise DataError(
            f"{src}: no images found (extensions {sorted(IMAGE_EXTENSIONS)}). Expected "
            "SRC/<individual_id>/<photo> or SRC/<train|test>/<individual_id>/<photo>."
        )
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


def _subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted; a loose image here has no individual, so it is an error."""
    entries = sorted(folder.iterdir())
    loose = [p for p in entries if _is_image(p)]
    if loose:
        raise DataError(
            f"{loose[0]}: image outside any individual folder; move it into "
            f"{folder}/<individual_id>/ (or delete it)."
        )
    return [p for p in entries if p.is_dir() and _visible(p)]


def _individual_folders(src: Path) -> list[Path]:
    """Individual folders, looking one level deeper when SRC holds only split folders."""
    top = _subfolders(src)
    splits = [p for p in top if p.name.lower() in SPLIT_FOLDERS]
    if not top or not splits:
        return top
    if len(splits) < len(top):
        other = next(p for p in top if p.name.lower() not in SPLIT_FOLDERS)
        raise DataError(
            f"{src}: mixes split folders ({splits[0].name}) with individual folders "
            f"({other.name}); put every individual under a split folder or none."
        )
    return [folder for split in splits for folder in _subfolders(split)]


def _images_under(folder: Path) -> Iterable[Path]:
    """Every visible image below `folder`, in sorted order, skipping hidden folders."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if _is_image(path):
                yield path


def _find(src: Path) -> list[tuple[Path, str]]:
    """(photo path, individual id) pairs; one id under two split folders is one animal."""
    found = []
    for folder in _individual_folders(src):
        individual = _check_individual(folder)
        found.extend((path, individual) for path in _images_under(folder))
    return found


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
            shutil.copy2(source, tmp)
        else:
            tmp.unlink()
            try:
                if link == "hardlink":
                    os.link(source, tmp)
                else:
                    os.symlink(source.resolve(), tmp)
            except OSError as err:
                raise DataError(
                    f"{target}: cannot {link} from {source} ({err}); use link='copy'."
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
