"""gallery.fusion: a package with keypoints, identify ranking by the calibrated fusion."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wildid.cli import app
from wildid.gallery.fusion import (
    FUSION,
    KEYPOINTS,
    LocalFusion,
    load_fusion,
    pack_features,
    read_features,
)
from wildid.gallery.identify import Identifier, results_table
from wildid.gallery.package import (
    MANIFEST,
    PackageError,
    UnsafePackageError,
    build_package,
    inspect_package,
    open_package,
    write_archive,
)
from wildid.gallery.store import Catalogue
from wildid.matching.local import Features


@pytest.fixture(scope="session")
def local_archive(built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local-package")
    return build_package(built.run, out / "local.zip", local=True)


@pytest.fixture
def local_package(local_archive: Path, tmp_path: Path):
    return open_package(Path(shutil.copy(local_archive, tmp_path / "local.zip")))


def test_package_carries_every_photos_keypoints_and_the_fitted_fusion(
    local_archive: Path, built
) -> None:
    with zipfile.ZipFile(local_archive) as z:
        names = set(z.namelist())
        meta = json.loads(z.read("package.json"))
        fusion = LocalFusion.from_json(json.loads(z.read(FUSION)))
        first = read_features(io.BytesIO(z.read(f"{KEYPOINTS}/0.npz")))
    keypoints = {n for n in names if n.startswith(KEYPOINTS)}
    assert len(keypoints) == meta["photos"] > 0
    assert len(first) > 0 and first.desc.shape == (len(first), 128)
    assert fusion.source == "validation" == meta["local"]["source"]  # the run has val queries
    assert fusion.rows > 0 and sum(fusion.weights) > 0
    assert set(fusion.operating_points) == {"map5", "gmean"}
    assert fusion.local.score == built.config.fusion.score
    assert inspect_package(local_archive)["local"]["rows"] == fusion.rows
    with zipfile.ZipFile(built.archive) as z:  # the default (fusion.local false): none
        assert FUSION not in z.namelist()


def test_stored_keypoints_round_to_a_255th() -> None:
    rng = np.random.default_rng(0)
    desc = rng.random((5, 128)).astype(np.float32)
    got = read_features(io.BytesIO(pack_features(Features(rng.random((5, 2)), desc))))
    assert np.abs(got.desc - desc).max() <= 0.5 / 255 + 1e-6


def test_identify_ranks_by_the_fused_probability_with_keypoint_scores(local_package, built) -> None:
    fused = Identifier(local_package)
    plain = Identifier(local_package, local=False)
    assert fused.fusion is not None and plain.fusion is None
    photo, individual = built.train_photo(0)
    [result] = fused.identify([photo], k=3)
    top = result.candidates[0]
    assert top.individual_id == individual and top.score > 0.99
    # its own crop: every keypoint is found again, more than in any other photo
    assert top.local is not None and top.local > max(c.local or 0 for c in result.candidates[1:])
    probabilities = [c.probability for c in result.candidates]
    assert probabilities == sorted(probabilities, reverse=True)
    assert top.probability == pytest.approx(
        float(fused.fusion.fused(np.array([top.score]), np.array([top.local]))[0]), abs=1e-5
    )
    assert fused.probability_threshold == fused.fusion.operating_points["gmean"]
    table = results_table([result])
    assert list(table.columns)[-1] == "local" and table["local"].notna().all()
    [alone] = plain.identify([photo], k=3)
    assert all(c.local is None for c in alone.candidates)
    assert "local" not in results_table([alone]).columns


def test_a_package_can_pool_an_individuals_keypoint_evidence(
    local_package, built, tmp_path: Path
) -> None:
    """fusion.pool "sum": calibrated and identified on the sum of an individual's
    shortlisted photos' keypoint scores, so its score is at least its best photo's."""
    config = built.config.model_copy(deep=True)
    config.fusion.pool = "sum"
    archive = build_package(built.run, tmp_path / "pooled.zip", config=config, local=True)
    pooled = Identifier(open_package(archive))
    assert pooled.fusion is not None and pooled.fusion.pool == "sum"
    assert Identifier(local_package).fusion.pool == "max"
    photo, individual = built.train_photo(0)
    [summed] = pooled.identify([photo], k=3)
    [best] = Identifier(local_package).identify([photo], k=3)
    assert summed.candidates[0].individual_id == individual == best.candidates[0].individual_id
    assert summed.candidates[0].local >= best.candidates[0].local > 0
    top = summed.candidates[0]
    assert top.probability == pytest.approx(
        float(pooled.fusion.fused(np.array([top.score]), np.array([top.local]))[0]), abs=1e-5
    )


def test_enrolled_photos_bring_their_keypoints(local_package, built) -> None:
    photo = built.test_photos()[0]
    record = Catalogue(local_package).enroll([photo], new_name="Nova")[0]
    stored = local_package.root / "enrolled" / "keypoints" / f"{record.sha256}.npz"
    assert stored.is_file() and len(read_features(stored)) > 0
    [result] = Identifier(local_package).identify([photo], k=2)
    assert result.candidates[0].individual_id == "Nova"
    assert result.candidates[0].local is not None and result.candidates[0].local > 0


def test_a_keypoints_file_that_needs_pickle_is_refused(local_archive: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(local_archive) as z:
        members = {n: z.read(n) for n in z.namelist() if n != MANIFEST}
    hostile = io.BytesIO()
    np.savez(hostile, xy=np.array([{"a": 1}], dtype=object), desc=np.zeros((1, 128)))
    members[f"{KEYPOINTS}/0.npz"] = hostile.getvalue()
    archive = write_archive(members, tmp_path / "hostile.zip")
    with pytest.raises(UnsafePackageError, match="keypoints"):
        open_package(archive)
    assert not (tmp_path / "hostile").exists()


def test_cli_local_flags(built, local_archive: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    photo, individual = built.train_photo(0)
    archive = Path(shutil.copy(local_archive, tmp_path / "l.zip"))
    done = runner.invoke(
        app, ["identify", str(archive), str(photo), "-k", "2", "--out", str(tmp_path / "r.csv")]
    )
    assert done.exit_code == 0, done.output
    rows = pd.read_csv(tmp_path / "r.csv")
    assert rows["individual_id"][0] == individual and rows["local"].notna().all()
    plain = Path(shutil.copy(built.archive, tmp_path / "p.zip"))
    refused = runner.invoke(app, ["identify", str(plain), str(photo), "--local"])
    assert refused.exit_code == 2 and "no keypoints" in refused.output
    assert load_fusion(tmp_path / "p") is None
    made = runner.invoke(app, ["package", str(built.run), str(tmp_path / "m.zip"), "--local"])
    assert made.exit_code == 0 and "keypoints (validation fusion)" in made.output
    with pytest.raises(PackageError, match="no keypoints"):
        Identifier(tmp_path / "p", local=True)


def test_leave_one_out_rows_see_other_sightings_then_other_individuals() -> None:
    from wildid.data.competition import NEW_INDIVIDUAL
    from wildid.gallery.fusion import calibration_rows

    labels = np.array(["a", "a", "a", "b", "b", "c"])
    groups = np.array(["s1", "s1", "s2", "s3", "s3", "s4"])
    rows, allowed, truths, source = calibration_rows(labels, groups, None, None, sample=10)
    assert source == "leave-one-out" and len(rows) == 12 and allowed.shape == (12, 6)
    half = len(rows) // 2
    for r, q in enumerate(rows[:half]):  # other sightings: known when the animal has one
        assert not allowed[r, groups == groups[q]].any() and allowed[r, groups != groups[q]].all()
        assert truths[r] == (labels[q] if labels[q] == "a" else NEW_INDIVIDUAL)
    for r, q in enumerate(rows[half:], start=half):  # other individuals: always new
        assert not allowed[r, labels == labels[q]].any() and truths[r] == NEW_INDIVIDUAL
    roles = np.array(["train"] * 4 + ["val"] * 2)
    val_truths = np.array(["", "", "", "", "b", NEW_INDIVIDUAL])
    rows, allowed, truths, source = calibration_rows(labels, groups, roles, val_truths, 10)
    assert source == "validation" and rows.tolist() == [4, 5] and truths == ["b", NEW_INDIVIDUAL]
    assert (allowed == (roles == "train")).all()
