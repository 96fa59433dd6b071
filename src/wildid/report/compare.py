"""`wildid compare RUN...`: several runs' figures and the settings that differ, one table.

Rows are the report's numbers (`RunFigures.scalars`: `validation.map5`, `test.top1`,
`embedding.ami`, ...) and then every setting of the runs' saved config.yaml whose value
is not the same in all of them (dotted keys, e.g. `train.lr`); one column per run. A
run's figures come from its report/figures.json when that is newer than its
metrics.json, else they are computed from the run folder (no pictures drawn).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from wildid.errors import WildidError
from wildid.io import write_csv
from wildid.layout import RunLayout
from wildid.report.collect import read_run
from wildid.report.figures import FIGURES, run_figures

HIGHER_IS_BETTER = {"embedding.ami", "embedding.nmi", "training.best_val_map5"}


class CompareError(WildidError, ValueError):
    """`wildid compare` was given fewer than two runs."""


@dataclass(frozen=True)
class Comparison:
    runs: list[str]  # column names (run names; the folder where two share a name)
    table: pd.DataFrame  # kind (figure, setting), key, then one column per run


def run_scalars(layout: RunLayout) -> dict[str, float | None]:
    """A run's figures (see the module docstring for where they come from)."""
    saved = layout.report / "figures.json"
    metrics = layout.metrics()
    if saved.is_file() and (
        not metrics.is_file() or saved.stat().st_mtime >= metrics.stat().st_mtime
    ):
        return json.loads(saved.read_text())["figures"]
    return run_figures(read_run(layout)).scalars()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def run_settings(layout: RunLayout) -> dict[str, Any]:
    """A run's saved config.yaml as dotted keys ({} when it has none)."""
    if not layout.config.is_file():
        return {}
    from wildid.config import load_config

    return _flatten(load_config(layout.config).model_dump(mode="json"))


def setting_differences(run: dict[str, Any], reference: dict[str, Any]) -> dict[str, tuple]:
    """setting -> (run's value, reference's value) where they differ (the name aside)."""
    keys = sorted(set(run) | set(reference))
    return {
        k: (run.get(k), reference.get(k))
        for k in keys
        if k != "name" and run.get(k) != reference.get(k)
    }


def _columns(layouts: Sequence[RunLayout]) -> list[str]:
    names = [layout.name for layout in layouts]
    return [str(layout.root) if names.count(layout.name) > 1 else layout.name for layout in layouts]


def compare_runs(layouts: Sequence[RunLayout]) -> Comparison:
    """The table of `layouts`' figures and differing settings (module docstring)."""
    if len(layouts) < 2:
        raise CompareError(
            f"compare needs two runs or more, got {len(layouts)}; for one run's figures: "
            "wildid report RUN"
        )
    columns = _columns(layouts)
    figures = [run_scalars(layout) for layout in layouts]
    settings = [run_settings(layout) for layout in layouts]
    rows = []
    keys = list(dict.fromkeys(k for f in figures for k in f))
    for key in keys:
        rows.append(
            {
                "kind": "figure",
                "key": key,
                **{c: f.get(key) for c, f in zip(columns, figures, strict=True)},
            }
        )
    every = sorted(set().union(*settings)) if settings else []
    for key in every:
        values = [s.get(key) for s in settings]
        if key == "name" or all(v == values[0] for v in values):
            continue
        rows.append(
            {
                "kind": "setting",
                "key": key,
                **{c: "" if v is None else str(v) for c, v in zip(columns, values, strict=True)},
            }
        )
    return Comparison(columns, pd.DataFrame(rows, columns=["kind", "key", *columns]))


def write_comparison(comparison: Comparison, path: str | Path) -> Path:
    return write_csv(comparison.table, path)


def _higher_is_better(key: str) -> bool:
    return key.split(".")[-1] in FIGURES or key in HIGHER_IS_BETTER


def _format(key: str, value: Any, best: float | None) -> str:
    if value is None or value != value:
        return "–"
    if key.endswith(("queries", "epochs")):
        return f"{value:.0f}"
    text = f"{value:.4f}"
    return f"[bold]{text}[/bold]" if best is not None and value == best else text


def rich_table(comparison: Comparison):
    """The comparison as a rich Table: figures to 4 decimals, the best of each in bold
    (where higher is better and the runs differ), then the differing settings."""
    from rich.table import Table

    table = Table(title="wildid compare")
    table.add_column("")
    for column in comparison.runs:
        table.add_column(column, justify="right", overflow="fold")
    for row in comparison.table.to_dict("records"):
        key, values = row["key"], [row[c] for c in comparison.runs]
        if row["kind"] == "figure":
            numbers = {v for v in values if isinstance(v, float) and v == v}
            best = max(numbers) if len(numbers) > 1 and _higher_is_better(key) else None
            cells = [_format(key, v, best) for v in values]
        else:
            cells = [str(v) if v != "" else "–" for v in values]
        table.add_row(key, *cells)
    return table
