"""What a person reads after a run: a results table of every method."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from wildid.pipeline import RunResult


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_run(result: RunResult, console: Console | None = None) -> None:
    """Trained vs baseline, one `MAP@5 <value>` line per method a script can grep, then
    where the run's report is (last line: `report: <path>`, when it was written)."""
    console = console or Console()
    table = Table(title="wildid results")
    for column in ("method", "val MAP@5", "threshold", "test MAP@5", "submission"):
        table.add_column(column)
    rows = [
        e
        for e in (result.trained, getattr(result, "fused", None), result.baseline)
        if e is not None
    ]
    for e in rows:
        table.add_row(
            e.name, _fmt(e.val_map5), _fmt(e.threshold), _fmt(e.test_map5), str(e.submission)
        )
    console.print(table)
    console.print("seconds: " + ", ".join(f"{k} {v}" for k, v in result.seconds.items()))
    for e in rows:
        if e.test_map5 is not None:
            console.print(f"MAP@5 {e.name} {e.test_map5:.4f}")
    if result.report is not None:
        console.print(f"report: {result.report}", soft_wrap=True)
