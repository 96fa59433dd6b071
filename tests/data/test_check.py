"""`wildid check` and the check that opens every run: bad photos in, one clear line out.

CASES is the table of bad inputs (what is written into a small valid competition, the
message fragment expected, the exit status of `wildid check`); each case also asserts one
error line without a traceback and that nothing in the data folder changed. The
reliability suite reuses the table.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from wildid.cli import app
from wildid.data.check import (
    CheckError,
    apply_policy,
    check_competition,
    header_size,
    photo_problem,
)
from wildid.data.competition import load_competition, write_tables

TRAIN = [("a.jpg", "ann"), ("b.jpg", "ann"), ("c.jpg", "bob"), ("d.jpg", "bob")]
TEST = [("t1.jpg", "ann"), ("t2.jpg", "cat")]


def jpeg(seed: int, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    """A small JPEG of noise (so half the file is cut inside the image data)."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    image = Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming width x height, and no image data."""
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))


def make_competition(root: Path) -> Path:
    """Four train photos of two individuals, two test photos (solution.csv included)."""
    for split, rows in (("train", TRAIN), ("test", TEST)):
        folder = root / f"{split}_images"
        folder.mkdir(parents=True, exist_ok=True)
        for i, (image, _) in enumerate(rows):
            (folder / image).write_bytes(jpeg(i + (10 if split == "test" else 0)))
    frame = {
        split: pd.DataFrame(rows, columns=["image", "individual_id"]).assign(species="whale")
        for split, rows in (("train", TRAIN), ("test", TEST))
    }
    write_tables(root, frame["train"], frame["test"])
    return root


def _photo(split: str, image: str) -> Callable[[Path, bytes], None]:
    def write(root: Path, data: bytes) -> None:
        (root / f"{split}_images" / image).write_bytes(data)

    return write


def _zero_bytes(root: Path) -> None:
    (root / "train_images" / "a.jpg").write_bytes(b"")


def _header_only(root: Path) -> None:
    data = jpeg(0)
    (root / "train_images" / "a.jpg").write_bytes(data[: data.index(b"\xff\xda")])


def _half(root: Path) -> None:
    data = jpeg(0)
    (root / "train_images" / "a.jpg").write_bytes(data[: len(data) // 2])


def _text(root: Path) -> None:
    (root / "train_images" / "a.jpg").write_text("this is not a photo\n")


def _huge_png(root: Path) -> None:
    (root / "train_images" / "a.jpg").write_bytes(png_header(100_000, 100_000))


def _above_limit(root: Path) -> None:  # below Pillow's own bomb limit, above ours
    (root / "train_images" / "a.jpg").write_bytes(png_header(8000, 8000))


def _duplicate(root: Path) -> None:
    (root / "train_images" / "c.jpg").write_bytes((root / "train_images" / "a.jpg").read_bytes())


def _missing(root: Path) -> None:
    (root / "train_images" / "a.jpg").unlink()


def _grayscale(root: Path) -> None:
    (root / "train_images" / "a.jpg").write_bytes(jpeg(0, mode="L"))


def _same_individual_copy(root: Path) -> None:  # harmless: one animal, twice
    (root / "train_images" / "b.jpg").write_bytes((root / "train_images" / "a.jpg").read_bytes())


def _empty_train_csv(root: Path) -> None:
    (root / "train.csv").write_bytes(b"")


def _garbled_csv(root: Path) -> None:
    (root / "sample_submission.csv").write_bytes(b"\x89\xff\xfe\x00garbage\n\x00\x01")


def _truncated_test(root: Path) -> None:
    data = jpeg(10)
    (root / "test_images" / "t1.jpg").write_bytes(data[: len(data) // 2])


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], None]
    fragment: str  # expected in the output (the error line, or the table for warnings)
    status: int  # exit status of `wildid check`
    bad_train: tuple[str, ...] = ()  # train photos that check.on_bad=skip leaves out


CASES = [
    Case("zero-byte photo", _zero_bytes, "unreadable: zero bytes", 2, ("a.jpg",)),
    Case(
        "JPEG header only", _header_only, "truncated: JPEG header without image data", 2, ("a.jpg",)
    ),
    Case("JPEG cut at half", _half, "truncated: image file is truncated", 2, ("a.jpg",)),
    Case("text named .jpg", _text, "unreadable: not an image", 2, ("a.jpg",)),
    Case("PNG header 100000x100000", _huge_png, "too_large: 100000x100000", 2, ("a.jpg",)),
    Case("64 MP header", _above_limit, "above check.max_pixels", 2, ("a.jpg",)),
    Case(
        "same bytes, two individuals",
        _duplicate,
        "one photo under two individuals",
        2,
        ("a.jpg", "c.jpg"),
    ),
    Case("missing photo", _missing, "unreadable: No such file", 2, ("a.jpg",)),
    Case("grayscale photo", _grayscale, "grayscale (mode L", 0),
    Case("same bytes, one individual", _same_individual_copy, "no problems", 0),
    Case("zero-byte train.csv", _empty_train_csv, "train.csv: empty file", 2),
    Case(
        "garbled sample_submission.csv",
        _garbled_csv,
        "sample_submission.csv: not a readable CSV",
        2,
    ),
    Case("truncated test photo", _truncated_test, "t1.jpg: truncated", 2),
]


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under root with its size, mtime and bytes: proof nothing was written."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_reports_each_bad_input_in_one_line(case: Case, tmp_path: Path) -> None:
    data = make_competition(tmp_path / "data")
    case.build(data)
    before = snapshot(data)
    result = CliRunner().invoke(app, ["check", str(data), "--working", str(tmp_path / "w")])
    assert result.exit_code == case.status, result.output
    assert case.fragment in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if case.status == 2:
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert snapshot(data) == before


@pytest.mark.parametrize("case", [c for c in CASES if c.bad_train], ids=lambda c: c.name)
def test_skip_leaves_bad_train_photos_out_and_stop_refuses(case: Case, tmp_path: Path) -> None:
    data = make_competition(tmp_path / "data")
    case.build(data)
    competition = load_competition(data, check_images=False)
    report = check_competition(competition, tmp_path / "w", progress=False)
    with pytest.raises(CheckError, match="check.on_bad=skip"):
        apply_policy(competition, report, "stop", progress=False)
    kept = apply_policy(competition, report, "skip", progress=False)
    assert set(competition.train["image"]) - set(kept.train["image"]) == set(case.bad_train)
    assert kept.test.equals(competition.test)  # test photos are never dropped
    listing = report.cache.with_name(report.cache.stem + "-problems.csv")
    assert set(pd.read_csv(listing)["image"]) >= set(case.bad_train)


def test_a_bad_test_photo_is_never_skipped(tmp_path: Path) -> None:
    data = make_competition(tmp_path / "data")
    _truncated_test(data)
    competition = load_competition(data)
    report = check_competition(competition, tmp_path / "w", progress=False)
    with pytest.raises(CheckError, match="test photo .*t1.jpg.*cannot be skipped"):
        apply_policy(competition, report, "skip", progress=False)


def test_second_check_reads_only_replaced_photos(tmp_path: Path) -> None:
    data = make_competition(tmp_path / "data")
    competition = load_competition(data)
    first = check_competition(competition, tmp_path / "w", progress=False)
    assert (first.reused, first.photos, len(first.problems)) == (0, 6, 0)
    again = check_competition(competition, tmp_path / "w", progress=False)
    assert again.reused == 6
    _half(data)
    third = check_competition(competition, tmp_path / "w", progress=False)
    assert third.reused == 5
    assert list(third.errors["image"]) == ["a.jpg"]
    assert not any(p.is_relative_to(data) for p in (first.cache, third.cache))


def test_raising_max_pixels_decodes_the_photo_after_all(tmp_path: Path) -> None:
    data = make_competition(tmp_path / "data")
    _above_limit(data)
    competition = load_competition(data)
    report = check_competition(competition, tmp_path / "w", progress=False)
    assert list(report.errors["problem"]) == ["too_large"]
    higher = check_competition(competition, tmp_path / "w", 100_000_000, progress=False)
    assert higher.reused == 5
    assert list(higher.errors["problem"]) == ["truncated"]  # a header, no pixels


def test_out_writes_the_table(tmp_path: Path) -> None:
    data = make_competition(tmp_path / "data")
    _zero_bytes(data)
    (data / "train_images" / "b.jpg").write_bytes(jpeg(1, mode="L"))
    out = tmp_path / "problems.csv"
    args = ["check", str(data), "--working", str(tmp_path / "w"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    table = pd.read_csv(out)
    assert set(zip(table["image"], table["severity"], strict=True)) == {
        ("a.jpg", "error"),
        ("b.jpg", "warning"),
    }


def test_imported_photos_are_named_by_their_catalogue_path(tmp_path: Path) -> None:
    from wildid.data.catalogue import ImportSpec, import_catalogue

    src = tmp_path / "deer"
    for i, individual in enumerate(("ann", "bob", "cat")):
        for k in range(3):
            path = src / individual / f"{k}_photo.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            # distinct bytes per photo (hash() of a str changes per process and collided)
            path.write_bytes(jpeg(3 * i + k))
    out = tmp_path / "out"
    import_catalogue(src, out, ImportSpec(new_fraction=0.34, test_fraction=0.3), progress=False)
    catalogue = pd.read_csv(out / "catalogue.csv")
    row = catalogue[catalogue["split"] == "train"].iloc[0]
    (out / "train_images" / row["image"]).write_bytes(b"")
    result = CliRunner().invoke(app, ["check", str(out), "--working", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert f"first {row['source']}: unreadable: zero bytes" in result.stderr
    assert row["image"] not in result.stderr


def test_header_size_reads_png_and_jpeg_headers() -> None:
    assert header_size(png_header(7, 5)) == ("PNG", 7, 5)
    assert header_size(jpeg(0, (33, 21))) == ("JPEG", 33, 21)
    assert header_size(b"hello") is None


def test_photo_problem_is_none_for_a_good_photo(tmp_path: Path) -> None:
    path = tmp_path / "ok.jpg"
    path.write_bytes(jpeg(0))
    assert photo_problem(path) is None
    path.write_bytes(png_header(8000, 8000))
    assert "too_large" in (photo_problem(path) or "")


def test_bad_photos_are_judged_the_same_after_ultralytics_patched_pillow(tmp_path: Path) -> None:
    """ultralytics replaces Image.open with a wrapper that answers an unidentified file by
    importing pi_heif: that must still read as 'not an image', never as a traceback."""
    import ultralytics.utils.patches  # noqa: F401  (installs the wrapper)

    text = tmp_path / "a.jpg"
    text.write_text("not a photo at all")
    problem = photo_problem(text, 50_000_000)
    assert problem is not None and "unreadable: not an image" in problem
