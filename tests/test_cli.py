"""The `wildid` command line: the forms scripts rely on, exit codes and messages."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from wildid.cli import app
from wildid.evaluation.metrics import map_at_k

REPO = Path(__file__).resolve().parents[1]
MINI = str(REPO / "configs" / "mini.yaml")


def _invoke(*args: object):  # noqa: ANN202
    return CliRunner().invoke(app, [str(a) for a in args])


def test_help_lists_every_command() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in (
        "synth",
        "import",
        "boxes",
        "run",
        "validate",
        "score",
        "prepare",
        "crop",
        "train",
    ):
        assert command in result.output


def test_synth_twice_with_one_seed_writes_identical_tables(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        result = _invoke("synth", tmp_path / name, "--seed", 7, "--individuals", 5, "--size", 64)
        assert result.exit_code == 0, result.output
        assert f"{tmp_path / name}: " in result.output and "5 individuals" in result.output
        outputs.append(
            {
                n: (tmp_path / name / n).read_bytes()
                for n in ("train.csv", "solution.csv", "sample_submission.csv", "boxes.csv")
            }
        )
    assert outputs[0] == outputs[1]


def test_synth_preview_writes_a_png(tmp_path: Path) -> None:
    result = _invoke(
        "synth", tmp_path / "s", "--individuals", 4, "--size", 64, "--preview", tmp_path / "p.png"
    )
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "p.png").format == "PNG"


def test_validate_accepts_a_valid_submission(tiny_comp: Path) -> None:
    result = _invoke("validate", tiny_comp / "sample_submission.csv", "--data", tiny_comp)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("sample_submission.csv: valid")


def test_validate_rejects_an_invalid_submission_naming_the_problem(
    tiny_comp: Path, tmp_path: Path
) -> None:
    lines = (tiny_comp / "sample_submission.csv").read_text().splitlines()
    bad = tmp_path / "submission.csv"
    bad.write_text("\n".join(lines[:-1]) + "\n")  # last test image missing
    missing = lines[-1].split(",")[0]
    result = _invoke("validate", bad, "--data", tiny_comp)
    assert result.exit_code != 0
    assert f"error: {bad}: test image '{missing}' is missing" in result.output


def test_validate_missing_file_is_an_error_not_a_traceback(tiny_comp: Path) -> None:
    result = _invoke("validate", tiny_comp / "nope.csv", "--data", tiny_comp)
    assert result.exit_code == 2 and "error:" in result.output and "file not found" in result.output


def test_score_prints_map5_last(tiny_comp: Path) -> None:
    submission, solution = tiny_comp / "sample_submission.csv", tiny_comp / "solution.csv"
    result = _invoke("score", submission, solution)
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    label, value = last.split()
    sub = pd.read_csv(submission, dtype=str).set_index("image")["predictions"]
    sol = pd.read_csv(solution, dtype=str)
    expected = map_at_k([sub[i].split() for i in sol["image"]], sol["individual_id"].tolist())
    assert label == "MAP@5" and float(value) == pytest.approx(expected, abs=1e-6)


def test_score_of_mismatched_files_exits_2(tiny_comp: Path, tmp_path: Path) -> None:
    other = tmp_path / "sub.csv"
    other.write_text("image,predictions\nx.jpg,new_individual\n")
    result = _invoke("score", other, tiny_comp / "solution.csv")
    assert result.exit_code == 2 and "error:" in result.output


def test_run_with_a_mistyped_key_exits_2_naming_it(tmp_path: Path) -> None:
    result = _invoke("run", MINI, "trian.epochs=1", f"working={tmp_path}")
    assert result.exit_code == 2
    assert "override trian.epochs=1: unknown key 'trian' (did you mean 'train'?)" in result.output
    assert not any(tmp_path.iterdir())  # failed before any work


def test_run_on_a_missing_data_folder_exits_2(tmp_path: Path) -> None:
    result = _invoke("run", MINI, f"data={tmp_path / 'none'}", f"working={tmp_path / 'w'}")
    assert result.exit_code == 2
    assert f"{tmp_path / 'none'}: competition folder not found" in result.output


def test_prepare_and_crop_stages(tiny_comp: Path, tmp_path: Path) -> None:
    common = (MINI, f"data={tiny_comp}", f"working={tmp_path / 'w'}")
    result = _invoke("prepare", *common)
    assert result.exit_code == 0, result.output
    train = len(pd.read_csv(tiny_comp / "train.csv"))
    assert f"{train} train" in result.output
    assert (tmp_path / "w" / "mini" / "split.csv").is_file()
    result = _invoke("crop", *common)
    assert result.exit_code == 0, result.output
    assert "crops in" in result.output and any((tmp_path / "w" / "crops").iterdir())


def test_import_a_catalogue(tmp_path: Path) -> None:
    for individual, photos in (("ann", 3), ("bob", 2), ("cat", 2), ("dan", 1)):
        for k in range(photos):
            folder = tmp_path / "src" / individual
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 6), (k * 40, ord(individual[0]), 7)).save(folder / f"{k}.jpg")
    result = _invoke("import", tmp_path / "src", tmp_path / "out", "--seed", 1)
    assert result.exit_code == 0, result.output
    assert "4 individuals" in result.output
    assert (tmp_path / "out" / "train.csv").is_file()


def test_import_of_a_missing_folder_exits_2(tmp_path: Path) -> None:
    result = _invoke("import", tmp_path / "none", tmp_path / "out")
    assert result.exit_code == 2 and "error:" in result.output


def test_boxes_write_to_the_working_folder_and_crop_through_crop_boxes(
    tiny_copy: Path, tmp_path: Path
) -> None:
    (tiny_copy / "boxes.csv").unlink()  # a catalogue without boxes
    data_files = sorted(p.name for p in tiny_copy.iterdir())
    working = tmp_path / "w"
    result = _invoke("boxes", tiny_copy, "--working", working)
    assert result.exit_code == 0, result.output
    target = working / "boxes" / f"{tiny_copy.name}.csv"
    assert sorted(p.name for p in tiny_copy.iterdir()) == data_files  # DATA only read
    setting = f"crop.boxes=[{{path: {target}, kind: fullbody}}]"
    assert f"crop with them: '{setting}'" in result.output
    boxes = pd.read_csv(target, dtype={"image": str})
    photos = pd.concat(
        [
            pd.read_csv(tiny_copy / "train.csv", dtype={"image": str}),
            pd.read_csv(tiny_copy / "sample_submission.csv", dtype={"image": str}),
        ]
    )
    assert sorted(boxes["image"]) == sorted(photos["image"])
    assert (boxes["kind"] == "fullbody").all()
    assert ((boxes["x2"] > boxes["x1"]) & (boxes["y2"] > boxes["y1"])).all()
    assert (boxes[["x1", "y1"]] >= 0).all().all()

    before = target.read_bytes()
    result = _invoke("boxes", tiny_copy, "--working", working)
    assert result.exit_code == 2 and "--force" in result.output
    assert target.read_bytes() == before  # not replaced without --force
    result = _invoke("boxes", tiny_copy, "--out", tiny_copy / "boxes.csv")
    assert result.exit_code == 2 and "only read" in result.output
    assert not (tiny_copy / "boxes.csv").exists()

    common = (MINI, f"data={tiny_copy}", f"working={working}", "crop.size=48")
    result = _invoke("crop", *common)  # no box for any photo: refused, one line
    assert result.exit_code == 2
    assert "most photos got no box" in result.output and "crop.boxes" in result.output
    result = _invoke("crop", *common, setting)
    assert result.exit_code == 0, result.output
    crops = pd.read_csv(result.output.split("crops in ")[-1].strip() + "/crops.csv")
    assert (crops["source"] == "box").all()


def test_run_with_the_head_blend_prints_its_map5(tiny_comp: Path, tmp_path: Path) -> None:
    from tests.conftest import FAST, MINI

    result = _invoke(
        "run",
        MINI,
        f"data={tiny_comp}",
        f"working={tmp_path / 'w'}",
        f"submissions={tmp_path / 's'}",
        *FAST,
        "retrieval.head_weight=0.5",
    )
    assert result.exit_code == 0, result.output
    assert "MAP@5 trained" in result.output
    assert (tmp_path / "s" / "mini.csv").is_file()


def test_a_user_error_in_any_stage_is_one_line_and_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 1\n")
    for command in ("prepare", "crop", "train", "run"):
        result = _invoke(command, bad)
        assert result.exit_code == 2, (command, result.output)
        assert "Traceback" not in result.output
        assert "did you mean 'lr'" in result.output


def test_submit_without_a_file_names_the_choices(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    (tmp_path / "submissions").mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "submissions" / name).write_text("image,predictions\n")
    result = _invoke("submit")
    assert result.exit_code == 2
    assert (
        "a.csv, b.csv" in result.output and "wildid submit submissions/<run>.csv" in result.output
    )
