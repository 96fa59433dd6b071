"""The results table a person reads after `wildid run`, and the lines scripts grep."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from wildid.evaluation.report import print_run
from wildid.pipeline import Evaluation, RunResult


def _print(result: RunResult) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    print_run(result, console)
    return console.export_text()


def test_trained_and_baseline_rows_and_map_lines() -> None:
    trained = Evaluation(
        "trained", 0.45, 0.61234, [], Path("submissions/submission.csv"), test_map5=0.55556
    )
    baseline = Evaluation("baseline", None, 0.2, [], Path("submissions/submission_baseline.csv"))
    text = _print(RunResult(trained, baseline, {"train": 12.5, "embed": 3.0}))
    assert "0.6123" in text and "0.4500" in text and "0.5556" in text
    baseline_row = next(line for line in text.splitlines() if "baseline" in line)
    assert baseline_row.count(" - ") >= 2  # no threshold, no test score
    assert "seconds: train 12.5, embed 3.0" in text
    lines = text.strip().splitlines()
    assert lines[-1] == "MAP@5 trained 0.5556"  # only methods with a test score
    assert not any(line.startswith("MAP@5 baseline") for line in lines)


def test_without_baseline_only_the_trained_row() -> None:
    trained = Evaluation("trained", 0.3, 0.5, [], Path("s.csv"))
    text = _print(RunResult(trained, None, {}))
    assert "trained" in text and "baseline" not in text
    assert "MAP@5 trained" not in text  # no solution.csv: nothing to grep


def test_the_report_is_the_last_line_when_it_was_written() -> None:
    trained = Evaluation("trained", 0.3, 0.5, [], Path("s.csv"), test_map5=0.4)
    index = Path("working/mini/report/index.html")
    lines = _print(RunResult(trained, None, {}, index)).strip().splitlines()
    assert lines[-2:] == ["MAP@5 trained 0.4000", f"report: {index}"]
