"""Tests for importing a folder-per-individual catalogue into the competition layout."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from wildid.data.catalogue import CATALOGUE_COLUMNS, ImportSpec, import_catalogue
from wildid.data.competition import NEW_INDIVIDUAL, DataError, load_competition

NYALA = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "nyala"
SIGHTING = r"^(\d+)_"
# individual -> number of sightings; each sighting has a left and a right photo.
SIGHTINGS = {"ann": 5, "bob": 4, "cat": 3, "dan": 2, "eve": 1, "fay": 1}


def _photo(path: Path, shade: int) -> None:
    """A tiny image whose pixels differ per photo, so no two files are identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (shade % 256, (shade * 7) % 256, (shade * 13) % 256)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.new("RGB", (8, 6), colour).save(path, format=fmt)


def _catalogue(root: Path, container: Callable[[int], str] | None = None) -> Path:
    """SRC/[<container>/]<individual>/<sighting>_<side>photo.jpg.

    Sighting numbers repeat across individuals, as in catalogues that number per animal.
    """
    shade = 0
    for individual, n in SIGHTINGS.items():
        for sighting in range(1, n + 1):
            folder = root / (container(sighting) if container else "") / individual
            for side in ("left", "right"):
                shade += 1
                ext = ".PNG" if shade % 5 == 0 else ".jpg"
                _photo(folder / f"{sighting}_{side}photo{ext}", shade)
    return root


def _read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name, dtype=str, keep_default_na=False)


def _spec(**kwargs: object) -> ImportSpec:
    defaults: dict[str, object] = {"group": SIGHTING, "new_fraction": 0.34, "test_fraction": 0.3}
    return ImportSpec(**{**defaults, **kwargs})  # type: ignore[arg-type]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return _catalogue(tmp_path / "deer")


def _sides(catalogue: pd.DataFrame) -> pd.Series:
    """Number of distinct splits per (individual, group) pair."""
    return catalogue.groupby(["individual_id", "group"])["split"].nunique()


def test_groups_stay_on_one_side(src: Path, tmp_path: Path) -> None:
    summary = import_catalogue(src, tmp_path / "out", _spec(), progress=False)
    catalogue = _read(tmp_path / "out", "catalogue.csv")
    assert (_sides(catalogue) == 1).all()
    assert summary.groups == sum(SIGHTINGS.values())
    assert set(catalogue["group"]) == {str(i) for i in range(1, 6)}  # raw, not qualified


def test_held_out_individuals_are_new_and_known_ones_are_in_train(
    src: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    summary = import_catalogue(src, out, _spec(), progress=False)
    catalogue = _read(out, "catalogue.csv")
    train_ids = set(catalogue.loc[catalogue["split"] == "train", "individual_id"])
    test_ids = set(catalogue.loc[catalogue["split"] == "test", "individual_id"])
    new = test_ids - train_ids
    assert summary.new_individuals == len(new) == round(0.34 * len(SIGHTINGS))
    solution = _read(out, "solution.csv").set_index("image")
    for image, individual in catalogue[["image", "individual_id"]].itertuples(index=False):
        if individual in new:
            assert solution.at[image, "individual_id"] == NEW_INDIVIDUAL
    known_test = test_ids & train_ids
    assert known_test  # individuals with >= 2 sightings contributed test photos
    assert set(_read(out, "train.csv")["individual_id"]) == train_ids
    assert set(solution["individual_id"]) - {NEW_INDIVIDUAL} == known_test
    competition = load_competition(out)
    assert competition.has_solution
    assert set(competition.train["species"]) == {"deer"}


def test_known_individuals_keep_a_train_group(src: Path, tmp_path: Path) -> None:
    import_catalogue(src, tmp_path / "out", _spec(new_fraction=0.0, test_fraction=0.9), False)
    catalogue = _read(tmp_path / "out", "catalogue.csv")
    per = catalogue.groupby("individual_id")["split"].agg(set)
    assert all("train" in splits for splits in per)  # at least one group stays in train
    for individual in ("eve", "fay"):  # a single sighting never goes to test
        assert per[individual] == {"train"}


def test_catalogue_columns_and_rows(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = import_catalogue(src, out, _spec(), progress=False)
    catalogue = _read(out, "catalogue.csv")
    n_photos = 2 * sum(SIGHTINGS.values())
    assert tuple(catalogue.columns) == CATALOGUE_COLUMNS
    assert len(catalogue) == n_photos == summary.train_images + summary.test_images
    assert list(catalogue["source"]) == sorted(catalogue["source"])
    assert catalogue["image"].is_unique
    assert all(name == name.lower() and len(name.split(".")[0]) == 14 for name in catalogue.image)
    for image, split in catalogue[["image", "split"]].itertuples(index=False):
        assert (out / f"{split}_images" / image).is_file()
    assert summary.individuals == len(SIGHTINGS)


def test_same_seed_gives_identical_bytes(src: Path, tmp_path: Path) -> None:
    import_catalogue(src, tmp_path / "one", _spec(seed=3), progress=False)
    import_catalogue(src, tmp_path / "two", _spec(seed=3), progress=False)
    for name in ("train.csv", "sample_submission.csv", "solution.csv", "catalogue.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_empty_group_makes_every_photo_its_own_group(src: Path, tmp_path: Path) -> None:
    for group in (None, ""):
        out = tmp_path / f"out{group!r}"
        summary = import_catalogue(src, out, _spec(group=group), progress=False)
        catalogue = _read(out, "catalogue.csv")
        assert summary.groups == len(catalogue)
        assert catalogue["group"].is_unique


def test_pre_split_containers_are_merged(tmp_path: Path) -> None:
    src = _catalogue(tmp_path / "deer", lambda sighting: "Train" if sighting % 2 else "test")
    summary = import_catalogue(src, tmp_path / "out", _spec(), progress=False)
    catalogue = _read(tmp_path / "out", "catalogue.csv")
    assert summary.individuals == len(SIGHTINGS)
    assert set(catalogue["individual_id"]) == set(SIGHTINGS)
    dan = catalogue.loc[catalogue["individual_id"] == "dan", "source"]
    assert {s.split("/")[0] for s in dan} == {"Train", "test"}  # one animal, two containers
    assert (_sides(catalogue) == 1).all()


def test_rerun_into_same_out_skips_identical_files(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    import_catalogue(src, out, _spec(), progress=False)
    before = {p.name: p.stat().st_ino for p in out.glob("*_images/*")}
    first = (out / "catalogue.csv").read_bytes()
    import_catalogue(src, out, _spec(), progress=False)
    assert (out / "catalogue.csv").read_bytes() == first
    assert {p.name: p.stat().st_ino for p in out.glob("*_images/*")} == before
    load_competition(out)


def test_rerun_with_other_seed_moves_images(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    import_catalogue(src, out, _spec(seed=0), progress=False)
    import_catalogue(src, out, _spec(seed=1), progress=False)
    catalogue = _read(out, "catalogue.csv")
    on_disk = sorted(p.name for p in out.glob("*_images/*"))
    assert on_disk == sorted(catalogue["image"])  # no stale copy left on the other side
    load_competition(out)


@pytest.mark.parametrize("link", ["hardlink", "symlink"])
def test_link_modes(src: Path, tmp_path: Path, link: str) -> None:
    out = tmp_path / "out"
    import_catalogue(src, out, _spec(link=link), progress=False)
    import_catalogue(src, out, _spec(link=link), progress=False)  # re-run is a no-op
    catalogue = _read(out, "catalogue.csv")
    image, source, split = catalogue.iloc[0][["image", "source", "split"]]
    target = out / f"{split}_images" / image
    assert target.is_symlink() == (link == "symlink")
    assert os.path.samefile(target, src / source)
    load_competition(out)


def test_hidden_files_and_folders_are_skipped(src: Path, tmp_path: Path) -> None:
    _photo(src / "ann" / ".1_hidden.jpg", 1)
    _photo(src / ".cache" / "1_x.jpg", 2)
    _photo(src / "ann" / ".thumbs" / "1_y.jpg", 3)
    (src / "ann" / "notes.txt").write_text("not an image")
    summary = import_catalogue(src, tmp_path / "out", _spec(), progress=False)
    assert summary.train_images + summary.test_images == 2 * sum(SIGHTINGS.values())


def test_species_override(src: Path, tmp_path: Path) -> None:
    import_catalogue(src, tmp_path / "out", _spec(species="nyala"), progress=False)
    assert set(_read(tmp_path / "out", "train.csv")["species"]) == {"nyala"}


def test_error_bad_regex(src: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"regex '\(\\d\+_' is invalid"):
        import_catalogue(src, tmp_path / "out", _spec(group=r"(\d+_"), progress=False)


def test_error_file_not_matching_regex(src: Path, tmp_path: Path) -> None:
    _photo(src / "bob" / "IMG_0001.jpg", 9)
    with pytest.raises(DataError, match=r"IMG_0001\.jpg.*--group ''"):
        import_catalogue(src, tmp_path / "out", _spec(), progress=False)


def test_error_empty_and_missing_src(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "ann").mkdir(parents=True)
    (empty / "ann" / "readme.txt").write_text("no photos")
    with pytest.raises(DataError, match="no images found"):
        import_catalogue(empty, tmp_path / "out", _spec(), progress=False)
    with pytest.raises(DataError, match="catalogue folder not found"):
        import_catalogue(tmp_path / "absent", tmp_path / "out", _spec(), progress=False)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("two words/1_a.jpg", "whitespace"),
        (f"{NEW_INDIVIDUAL}/1_a.jpg", "reserved"),
        ("1_loose.jpg", "outside any individual folder"),
        ("train/ann/9_a.jpg", "mixes split folders"),
    ],
)
def test_error_bad_layout(src: Path, tmp_path: Path, path: str, message: str) -> None:
    _photo(src / path, 5)
    with pytest.raises(DataError, match=message):
        import_catalogue(src, tmp_path / "out", _spec(), progress=False)


@pytest.mark.parametrize(
    "spec",
    [ImportSpec(new_fraction=1.0), ImportSpec(test_fraction=-0.1), ImportSpec(link="move")],
)
def test_error_bad_spec(src: Path, tmp_path: Path, spec: ImportSpec) -> None:
    with pytest.raises(DataError, match="ImportSpec"):
        import_catalogue(src, tmp_path / "out", spec, progress=False)


def test_error_out_inside_src(src: Path) -> None:
    with pytest.raises(DataError, match="inside the catalogue"):
        import_catalogue(src, src / "out", _spec(), progress=False)


def test_error_no_test_photos(tmp_path: Path) -> None:
    src = tmp_path / "deer"
    _photo(src / "ann" / "1_a.jpg", 1)
    with pytest.raises(DataError, match="no test photos"):
        import_catalogue(src, tmp_path / "out", _spec(), progress=False)


@pytest.mark.skipif(
    not NYALA.is_dir(),
    reason=f"nyala dataset not found at {NYALA} (see ../shared/datasets/README.md)",
)
def test_nyala_import(tmp_path: Path) -> None:
    out = tmp_path / "nyala"
    spec = ImportSpec(group=SIGHTING, new_fraction=0.2, link="symlink")
    summary = import_catalogue(NYALA, out, spec, progress=False)
    catalogue = _read(out, "catalogue.csv")
    assert (_sides(catalogue) == 1).all()  # no sighting of one animal on both sides
    assert catalogue["individual_id"].nunique() == summary.individuals == 237
    assert summary.new_individuals == round(0.2 * 237)
    assert summary.train_images + summary.test_images == len(catalogue) == 1942
    competition = load_competition(out)
    assert len(competition.test) == summary.test_images


# --- links and duplicates -----------------------------------------------------------------


def _loop(src: Path) -> None:
    (src / "ann" / "again").symlink_to(src / "ann", target_is_directory=True)


def _top_loop(src: Path) -> None:
    (src / "fake").symlink_to(src, target_is_directory=True)


def _cross_link(src: Path) -> None:
    (src / "bob" / "9_leftphoto.jpg").symlink_to(src / "ann" / "1_leftphoto.jpg")


def _cross_copy(src: Path) -> None:
    (src / "bob" / "9_leftphoto.jpg").write_bytes((src / "ann" / "1_leftphoto.jpg").read_bytes())


# (catalogue change, follow links, expected error fragment or None, photos imported)
LINK_CASES = [
    ("loop, not followed", _loop, False, None, 32),
    ("loop, followed", _loop, True, "again: link loop or second path to", 0),
    ("top-level loop, followed", _top_loop, True, "fake: link loop", 0),
    ("cross-individual link, not followed", _cross_link, False, None, 32),
    ("cross-individual link, followed", _cross_link, True, "hold the same bytes", 0),
    ("same bytes under two individuals", _cross_copy, False, "hold the same bytes", 0),
]


@pytest.mark.parametrize(
    ("change", "follow", "fragment", "photos"),
    [case[1:] for case in LINK_CASES],
    ids=[case[0] for case in LINK_CASES],
)
def test_links_and_duplicates(
    src: Path,
    tmp_path: Path,
    change: Callable[[Path], None],
    follow: bool,
    fragment: str | None,
    photos: int,
) -> None:
    change(src)
    out = tmp_path / "out"
    spec = _spec(follow_links=follow)
    if fragment is None:
        import_catalogue(src, out, spec, progress=False)
        catalogue = _read(out, "catalogue.csv")
        assert len(catalogue) == photos == 2 * sum(SIGHTINGS.values())
        assert not catalogue["source"].str.contains("again|9_left").any()
        return
    with pytest.raises(DataError, match=fragment) as err:
        import_catalogue(src, out, spec, progress=False)
    assert str(src) in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()  # refused before anything was written


def test_duplicate_names_both_catalogue_photos(src: Path, tmp_path: Path) -> None:
    _cross_copy(src)
    with pytest.raises(DataError) as err:
        import_catalogue(src, tmp_path / "out", _spec(), progress=False)
    message = str(err.value)
    assert str(src / "ann" / "1_leftphoto.jpg") in message
    assert str(src / "bob" / "9_leftphoto.jpg") in message
    assert "(ann)" in message and "(bob)" in message


def test_duplicates_keep_imports_them_with_a_warning(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _cross_copy(src)
    import_catalogue(src, tmp_path / "out", _spec(duplicates="keep"), progress=False)
    assert "hold the same bytes" in capsys.readouterr().err
    assert len(_read(tmp_path / "out", "catalogue.csv")) == 2 * sum(SIGHTINGS.values()) + 1


def test_skipped_links_are_counted_in_one_warning(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _cross_link(src)
    import_catalogue(src, tmp_path / "out", _spec(), progress=False)
    err = capsys.readouterr().err
    assert "1 symbolic link(s) were not followed" in err and "--follow-links" in err


def test_a_photo_reached_twice_through_links_is_imported_once(src: Path, tmp_path: Path) -> None:
    (src / "ann" / "alias").mkdir()
    (src / "ann" / "alias" / "1_leftphoto.jpg").symlink_to(src / "ann" / "1_leftphoto.jpg")
    import_catalogue(src, tmp_path / "out", _spec(follow_links=True), progress=False)
    catalogue = _read(tmp_path / "out", "catalogue.csv")
    assert len(catalogue) == 2 * sum(SIGHTINGS.values())


def test_import_cli_refuses_a_loop_in_one_line(src: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wildid.cli import app

    _top_loop(src)
    args = ["import", str(src), str(tmp_path / "out"), "--group", SIGHTING, "--follow-links"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "link loop" in result.stderr
    assert "Traceback" not in result.output
