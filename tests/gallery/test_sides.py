"""Side-aware identify: same-flank gallery photos only, scores equal to the benchmark's ranking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wildid.evaluation.protocols import rank, side_mask
from wildid.gallery.identify import Identifier
from wildid.gallery.package import Package, side_of


def _with_sides(package: Package, regex: str | None = None) -> pd.DataFrame:
    """Give the (not yet catalogued) package's photos alternating flanks, some unknown."""
    path = package.root / "gallery" / "photos.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table["side"] = [("left", "right", "left", "")[i % 4] for i in range(len(table))]
    table.to_csv(path, index=False, lineterminator="\n")
    if regex is not None:
        meta = json.loads((package.root / "package.json").read_text())
        meta["side_regex"] = regex
        (package.root / "package.json").write_text(json.dumps(meta))
    table["id"] = table["id"].astype(int)
    return table.replace({"": None})


def _direct(identifier: Identifier, photo: Path, side: str | None, photos: pd.DataFrame):
    """The benchmark's ranking (protocols.rank over side_mask'ed cosine) of one photo."""
    vectors, rows = identifier.package.embeddings()
    gallery = np.asarray(vectors, dtype=np.float32)
    query = identifier.embedder.embed([photo]).vectors.astype(np.float16).astype(np.float32)
    sides = photos.set_index("id").loc[rows, "side"].reset_index(drop=True)
    allowed = side_mask(pd.Series([side], dtype=object), sides)
    scores = np.where(allowed, query @ gallery.T, -np.inf)
    ids = photos.set_index("id").loc[rows, "individual_id"].to_numpy()
    ranking = rank(scores, ids)
    return ranking.labels[0], ranking.scores[0], ids, sides


@pytest.mark.parametrize("side", ["left", "right", None])
def test_identify_ranks_as_the_benchmark_and_only_same_flank(package, built, side) -> None:
    photos = _with_sides(package)
    identifier = Identifier(package)
    photo, _ = built.train_photo(3)
    [result] = identifier.identify([photo], k=8, sides=side)
    labels, scores, ids, sides = _direct(identifier, photo, side, photos)
    got = [(c.individual_id, c.score) for c in result.candidates]
    n = min(8, len(labels))
    assert [g[0] for g in got] == labels[:n]
    assert np.allclose([g[1] for g in got], scores[:n], atol=1e-6)
    thumbs = photos.set_index("thumbnail")["side"]
    for c in result.candidates:  # the photo shown is one it was compared with
        shown = thumbs[str(c.photo.relative_to(package.root))]
        assert side is None or shown in (side, None)
    if side is not None:  # an individual with photos of the other flank only: no candidate
        seen = {i for i, s in zip(ids, sides, strict=True) if s in (side, None)}
        assert {c.individual_id for c in result.candidates} <= seen


def test_side_is_read_from_the_file_name_with_the_package_regex(
    package, built, tmp_path: Path
) -> None:
    _with_sides(package, regex=r"_(left|right)")
    identifier = Identifier(package)
    photo, _ = built.train_photo(3)
    named = Path(shutil.copy(photo, tmp_path / "12_rightphoto.jpg"))
    assert identifier.sides([named, photo]) == ["right", None]
    assert identifier.sides([named, photo], sides="left") == ["left", "left"]
    [by_name] = identifier.identify([named], k=8)
    [given] = identifier.identify([photo], k=8, sides="right")
    [plain] = identifier.identify([photo], k=8)
    assert [(c.individual_id, c.score) for c in by_name.candidates] == [
        (c.individual_id, c.score) for c in given.candidates
    ]
    assert [c.score for c in plain.candidates] != [c.score for c in given.candidates]


def test_side_of_reads_the_group_or_the_match() -> None:
    assert side_of("a/12_leftphoto.jpg", r"_(left|right)") == "left"
    assert side_of("12_rightphoto.jpg", r"right|left") == "right"
    assert side_of("12.jpg", r"_(left|right)") is None
    assert side_of("12_leftphoto.jpg", None) is None


def test_a_package_without_a_catalogue_records_no_side_regex(built) -> None:
    meta = Identifier(built.archive).package.meta
    assert meta["side_regex"] is None
