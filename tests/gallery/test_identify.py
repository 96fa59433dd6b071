"""gallery.identify and the package/identify/enroll commands."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from typer.testing import CliRunner

from wildid.cli import app
from wildid.gallery.identify import Identifier, match_sheet, ranked, results_table
from wildid.gallery.store import Catalogue
from wildid.matching.sightings import pool_by_sighting


def test_a_train_photo_is_its_own_individual_at_rank_one(package, built) -> None:
    identifier = Identifier(package)
    for row in (0, 5):
        photo, individual = built.train_photo(row)
        [result] = identifier.identify([photo], k=5)
        assert result.candidates[0].individual_id == individual
        assert result.candidates[0].score > 0.99
        assert [c.rank for c in result.candidates] == [1, 2, 3, 4, 5]
        scores = [c.score for c in result.candidates]
        assert scores == sorted(scores, reverse=True)
        assert all(0 <= c.probability <= 1 and c.photo.is_file() for c in result.candidates)
        assert result.crop.dtype == np.uint8 and result.crop.ndim == 3
        assert not result.new_individual


def test_enrolled_new_individual_comes_back_at_rank_one(package, built) -> None:
    identifier = Identifier(package)
    photo = built.test_photos()[0]
    entry = Catalogue(package).enroll([photo], new_name="Nova")[0].entry  # another instance
    [result] = identifier.identify([photo])
    assert result.candidates[0].individual_id == "Nova"
    Catalogue(package).undo(entry)
    [result] = identifier.identify([photo])
    assert "Nova" not in [c.individual_id for c in result.candidates]


def test_equal_fused_probabilities_rank_by_cosine_then_keypoints() -> None:
    # flat calibrations give individuals 0, 1 and 3 one fused probability; the cosine
    # decides between 0 and 1, the keypoint score between the equal cosines of 0 and 3
    fused = np.array([0.5, 0.5, 0.2, 0.5, -np.inf])
    cosine = np.array([0.4, 0.9, 0.95, 0.4, 0.99])
    local = np.array([1.0, 0.0, 9.0, 3.0, 9.0])
    assert ranked(fused, cosine, local, k=4).tolist() == [1, 3, 0, 2]
    assert ranked(fused, k=5).tolist() == [0, 1, 3, 2, 4]  # no tie keys: by index
    assert ranked(fused, cosine, k=2).tolist() == [1, 0]


def test_sighting_photos_vote_together(package, built) -> None:
    identifier = Identifier(package)
    photos = built.test_photos()[:3]
    pooled = identifier.identify(photos, sighting=True, k=4)
    alone = identifier.identify(photos, k=len(identifier.index().individuals))
    assert len({tuple(c.individual_id for c in r.candidates) for r in pooled}) == 1
    scores = pd.DataFrame([{c.individual_id: c.score for c in r.candidates} for r in alone])
    mean = scores.mean().sort_values(ascending=False)
    got = [(c.individual_id, c.score) for c in pooled[0].candidates]
    assert [g[0] for g in got] == list(mean.index[:4])
    assert np.allclose([g[1] for g in got], mean.iloc[:4], atol=1e-5)
    dense = scores.to_numpy(dtype=np.float32)
    expected, _ = pool_by_sighting(dense, np.arange(dense.shape[1]), np.zeros(3))
    assert np.allclose(np.sort(expected[0])[::-1][:4], [g[1] for g in got], atol=1e-5)


def test_match_sheet_is_a_png(package, built, tmp_path: Path) -> None:
    [result] = Identifier(package).identify([built.test_photos()[0]], k=3)
    sheet = match_sheet(result, tmp_path / "sheet.png")
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[1] > 3 * 100
    assert len(results_table([result])) == 3


def test_cli_package_identify_enroll(built, tmp_path: Path) -> None:
    runner = CliRunner()
    archive = tmp_path / "p.zip"
    done = runner.invoke(app, ["package", str(built.run), str(archive)])
    assert done.exit_code == 0, done.output
    inspected = runner.invoke(app, ["package", "--inspect", str(archive)])
    assert json.loads(inspected.output)["checksums"] == "ok"
    photo, individual = built.train_photo(0)
    for name in ("rows.csv", "rows.json"):
        done = runner.invoke(
            app,
            [
                "identify",
                str(archive),
                str(photo),
                "-k",
                "3",
                "--out",
                str(tmp_path / name),
                "--sheet",
                str(tmp_path / "sheets"),
            ],
        )
        assert done.exit_code == 0, done.output
    rows = pd.read_csv(tmp_path / "rows.csv")
    assert list(rows.columns) == ["query", "rank", "individual_id", "score", "probability"]
    assert rows["rank"].tolist() == [1, 2, 3] and rows["individual_id"][0] == individual
    assert json.loads((tmp_path / "rows.json").read_text())[0]["individual_id"] == individual
    assert len(list((tmp_path / "sheets").glob("*.png"))) == 1
    new = built.test_photos()[0]
    done = runner.invoke(app, ["enroll", str(archive), str(new), "--new", "Kit", "--by", "me"])
    assert done.exit_code == 0, done.output
    again = runner.invoke(app, ["enroll", str(archive), str(new), "--as", "Kit"])
    assert again.exit_code == 2 and "already in the gallery" in again.output
    done = runner.invoke(app, ["identify", str(tmp_path / "p"), str(new), "-k", "1"])
    assert "Kit" in done.output
    assert runner.invoke(app, ["enroll", str(archive), "--undo", "1"]).exit_code == 0
    missing = runner.invoke(app, ["package", "no-such-run", str(tmp_path / "q.zip")])
    assert missing.exit_code == 2


def test_new_individual_is_decided_at_the_packages_operating_point(package) -> None:
    """Packages carry an isotonic calibration and two thresholds on its probability, both
    chosen on the package's own calibration queries; identify calls a photo new when its
    best candidate's probability is under the chosen one."""
    meta = json.loads((package.root / "package.json").read_text())
    points = meta["operating_points"]
    assert set(points) == {"map5", "gmean"} and meta["operating_point"] == "gmean"
    assert all(0.0 <= v <= 1.0 + 1e-6 for v in points.values())
    calibration = json.loads((package.root / "calibration.json").read_text())
    assert calibration["method"] in ("isotonic", "logistic")  # logistic: a one-class fit
    photos = sorted((package.root / "gallery" / "thumbs").iterdir())[:4]
    for point in ("map5", "gmean"):
        identifier = Identifier(package, operating_point=point)
        assert identifier.probability_threshold == points[point]
        for result in identifier.identify(photos):
            best = result.candidates[0].probability
            assert result.new_individual == (best < points[point])


def test_a_package_without_operating_points_decides_as_before(package) -> None:
    meta_path = package.root / "package.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("operating_points")
    meta_path.write_text(json.dumps(meta))
    (package.root / "calibration.json").write_text(
        json.dumps(
            {
                "method": "logistic",
                "coef": 10.0,
                "intercept": -5.0,
                "source": "default",
                "pairs": 0,
                "positives": 0,
            }
        )
    )
    from wildid.gallery.package import Package

    old = Package(package.root)
    identifier = Identifier(old)
    assert identifier.probability_threshold is None
    photo = sorted((package.root / "gallery" / "thumbs").iterdir())[0]
    [result] = identifier.identify([photo])
    assert result.new_individual == (result.candidates[0].score < old.threshold)
