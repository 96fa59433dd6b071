"""A run's report (written by `wildid run`, rewritten by `wildid report`), in a real
headless Chromium, beside a reference run; `wildid compare`; bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from wildid import pipeline
from wildid.cli import app
from wildid.evaluation.report import print_run
from wildid.report.page import SECTIONS

PICTURES = ("training", "threshold", "map", "matches_right", "matches_wrong")


def _invoke(*args: object):  # noqa: ANN202
    return CliRunner().invoke(app, [str(a) for a in args])


def _metrics(run) -> dict:  # noqa: ANN001
    return json.loads(run.layout.metrics().read_text())


def test_run_ends_with_its_report_and_figures(runs) -> None:  # noqa: ANN001
    a = runs.a
    report = a.layout.report
    assert a.result.report == report / "index.html" and a.result.report.is_file()
    data = json.loads((report / "figures.json").read_text())
    figures, metrics = data["figures"], _metrics(a)
    assert figures["validation.map5"] == pytest.approx(metrics["val_map5"])
    assert figures["test.map5"] == pytest.approx(metrics["test_map5"])
    for key in ("precision@1", "precision@10", "map", "recall@5", "baks", "baus", "top5"):
        assert 0.0 <= figures[f"validation.{key}"] <= 1.0, key
    assert figures["validation.new_queries"] > 0  # held-out individuals among the queries
    assert -1.0 <= figures["embedding.ami"] <= 1.0 and 0.0 <= figures["embedding.nmi"] <= 1.0
    assert data["map"]["method"] == "umap" and data["map"]["points"]
    split = pd.read_csv(a.layout.split)
    assert len(data["map"]["points"]) == len(split)
    assert {p["role"] for p in data["map"]["points"]} == {"train", "val"}
    assert data["training"]["fold0"][0]["epoch"] == 1
    assert data["threshold"]["value"] == metrics["threshold"] and data["threshold"]["curve"]
    assert data["galleries"]["right"] and data["galleries"]["wrong"]
    species = {row["species"] for row in data["sets"]["validation"]["per_species"]}
    assert "all" in species and len(species) > 1
    assert set(data["pictures"]) == set(PICTURES)
    assert all((report / name).is_file() for name in data["pictures"].values())
    console = Console(record=True, width=200, file=io.StringIO())
    print_run(a.result, console)
    assert console.export_text().strip().splitlines()[-1] == f"report: {a.result.report}"


def test_report_in_chromium_shows_every_section_and_picture(runs, browser) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    index = runs.a.result.report
    assert "http://" not in index.read_text() and "https://" not in index.read_text()
    browser.get(index.as_uri())
    for section, title in SECTIONS.items():
        heading = browser.find_element(By.CSS_SELECTOR, f"section#{section} h2")
        assert heading.text == title
    for key in PICTURES:
        img = browser.find_element(By.CSS_SELECTOR, f"#picture-{key} img")
        loaded = browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", img
        )
        assert loaded, f"picture {key} did not load"
    assert browser.find_elements(By.CSS_SELECTOR, ".missing") == []  # nothing left out
    table = browser.find_element(By.CSS_SELECTOR, "section#identification table").text
    for label in ("MAP@5", "top-1", "precision@3", "mAP", "recall@10"):
        assert label in table
    open_set = browser.find_element(By.ID, "open-set").text
    assert "BAKS" in open_set and "BAUS" in open_set
    assert "AMI" in browser.find_element(By.ID, "embedding").text


def test_report_with_a_reference_shows_both_runs_and_the_differences(runs) -> None:  # noqa: ANN001
    a, b = runs.a, runs.b
    result = _invoke("report", "tiny-b", "--reference", a.layout.root, "--working", runs.working)
    assert result.exit_code == 0, result.output
    index = b.layout.report / "index.html"
    assert result.output.strip().splitlines()[-1] == f"report: {index}"
    data = json.loads((b.layout.report / "figures.json").read_text())
    assert data["reference"]["run"] == "tiny-a"
    assert data["difference"]["threshold"] == pytest.approx(0.6 - _metrics(a)["threshold"])
    assert data["difference"]["validation.map5"] == pytest.approx(
        _metrics(b)["val_map5"] - _metrics(a)["val_map5"]
    )
    page = index.read_text()
    for key in ("map", "matches_right", "matches_wrong"):
        assert f'id="picture-reference_{key}"' in page and f'id="picture-{key}"' in page
    assert "Settings that differ" in page and "retrieval.threshold" in page
    assert 'class="ref"' in page and "Δ" in page


def test_compare_two_runs_prints_and_writes_one_table(runs, tmp_path: Path) -> None:  # noqa: ANN001
    a, b = runs.a, runs.b
    out = tmp_path / "compare.csv"
    result = _invoke("compare", a.layout.root, "tiny-b", "--working", runs.working, "--out", out)
    assert result.exit_code == 0, result.output
    assert "wildid compare" in result.output and "validation.map5" in result.output
    assert result.output.strip().splitlines()[-1] == f"table: {out}"
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["kind", "key", "tiny-a", "tiny-b"]
    figures = table[table["kind"] == "figure"].set_index("key")
    assert float(figures.at["validation.map5", "tiny-a"]) == pytest.approx(_metrics(a)["val_map5"])
    assert float(figures.at["validation.map5", "tiny-b"]) == pytest.approx(_metrics(b)["val_map5"])
    settings = table[table["kind"] == "setting"].set_index("key")
    assert set(settings.index) == {"model.checkpoint", "retrieval.threshold"}
    assert settings.at["retrieval.threshold", "tiny-b"] == "0.6"
    default = _invoke("compare", "tiny-a", "tiny-b", "--working", runs.working)
    assert default.exit_code == 0, default.output
    assert (runs.working / "compare" / "tiny-a_vs_tiny-b.csv").is_file()
    alone = _invoke("compare", "tiny-a", "--working", runs.working)
    assert alone.exit_code == 2 and alone.output.startswith("error: compare needs two runs")


@pytest.mark.parametrize(
    "args",
    [
        ("report", "nosuch"),
        ("report", "tiny-a", "--reference", "nosuch"),
        ("compare", "tiny-a", "nosuch"),
    ],
)
def test_a_missing_run_is_one_line_and_exit_2(runs, args: tuple[str, ...]) -> None:  # noqa: ANN001
    result = _invoke(*args, "--working", runs.working)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nosuch: neither a run folder")
    assert "tiny-a, tiny-b" in lines[0]  # the runs that are there


def test_a_failing_report_warns_and_keeps_the_results(
    runs,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    import wildid.report

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no room for pictures")

    monkeypatch.setattr(wildid.report, "write_report", broken)
    assert pipeline.report(runs.a.config, progress=False) is None
    err = capsys.readouterr().err
    assert "warning: the report of" in err and "RuntimeError: no room for pictures" in err
    assert f"wildid report {runs.a.layout.root}" in err
    assert runs.a.layout.metrics().is_file()  # the run's results stand
