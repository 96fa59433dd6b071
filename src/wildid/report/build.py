"""Write a run's report: `working/<run>/report/` (index.html, figures.json, the PNGs).

The stages, each its own module: `collect` reads the run folder, `figures` computes the
numbers, `embedding_map` projects the embeddings, `pictures` and `galleries` draw, `page`
lays out the HTML. `write_report` chains them; `wildid run` calls it last and
`wildid report RUN [--reference RUN]` calls it again (a reference's pictures are drawn
into this run's report folder, under reference_*.png, so the page stays one file).

figures.json holds what the page shows as data: every figure per query set and species,
the training histories, the threshold curve, the map's coordinates, the gallery rows (and
the reference's, with the differences), so a notebook or a script never scrapes HTML.
Every file is written atomically; PNGs of an earlier report that this one no longer has
are removed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from wildid.config import TrainConfig
from wildid.io import write_text
from wildid.layout import RunLayout
from wildid.report.collect import RunFiles, read_run
from wildid.report.compare import run_settings, setting_differences
from wildid.report.embedding_map import EmbeddingMap, embedding_map
from wildid.report.figures import RunFigures, run_figures
from wildid.report.galleries import confusions, gallery_rows, render_gallery
from wildid.report.page import Picture, RunPage, render
from wildid.report.pictures import (
    embedding_map_figure,
    save_png,
    threshold_curve,
    training_curves,
)

CURVES_NOTE = "one colour per fold; validation MAP@5 of the closed set (no new_individual) dotted"
THRESHOLD_NOTE = "validation MAP@5 for each new_individual threshold; the chosen one dotted"


@dataclass(frozen=True)
class Report:
    root: Path  # working/<run>/report
    index: Path  # index.html
    figures: Path  # figures.json
    run: RunPage
    reference: RunPage | None


def headline_settings(files: RunFiles) -> dict[str, object]:
    """The settings a reader wants next to the scores."""
    c = files.config
    if c is None:
        return {}
    return {
        "data": c.data,
        "backbone": f"{c.model.backbone} ({c.model.embedding_dim}-d)",
        "loss": c.loss.name,
        "crops": ", ".join(c.crop.kinds) + f" ({c.crop.source})",
        "training": _training(c.train),
        "model.checkpoint": c.model.checkpoint or "trained here",
    }


def _training(tc: TrainConfig) -> str:
    start = f"{tc.image_size_start}-" if tc.image_size_start else ""
    return (
        f"{tc.epochs} epochs at {start}{tc.image_size} px, {tc.folds} fold(s)"
        + (f", within {tc.budget_minutes:g} min" if tc.budget_minutes else "")
        + (f", frozen: {', '.join(tc.freeze)}" if tc.freeze else "")
    )


def _map_picture(emb_map: EmbeddingMap, key: str, name: str, out: Path) -> Picture:
    fig = embedding_map_figure(emb_map, title=name)
    path = save_png(fig, out / f"{key}.png")
    return Picture(key, f"embedding map of {name}", path, f"{name}: {emb_map.note}")


def run_page(
    files: RunFiles,
    figures: RunFigures,
    out: Path,
    prefix: str = "",
    progress: bool = False,
    curves: bool = True,
) -> tuple[RunPage, EmbeddingMap | None]:
    """Draw one run's pictures into `out` (named `<prefix><key>.png`); `curves` False
    leaves out the training and threshold curves (drawn with a reference's instead)."""
    name = files.name
    pictures: dict[str, Picture] = {}
    if curves and figures.histories:
        path = save_png(
            training_curves(figures.histories, names=(name, "")), out / f"{prefix}training.png"
        )
        pictures["training"] = Picture(
            f"{prefix}training", f"training curves of {name}", path, CURVES_NOTE
        )
    if curves and figures.threshold_curve:
        fig = threshold_curve(figures.threshold_curve, figures.threshold, names=(name, ""))
        path = save_png(fig, out / f"{prefix}threshold.png")
        pictures["threshold"] = Picture(
            f"{prefix}threshold", f"threshold curve of {name}", path, THRESHOLD_NOTE
        )
    if progress:
        print(f"report {name}: mapping the embeddings")
    emb_map = embedding_map(files)
    if emb_map is not None:
        pictures["map"] = _map_picture(emb_map, f"{prefix}map", name, out)
    galleries, confused = {}, None
    validation = figures.sets.get("validation")
    if validation is not None:
        for kind in ("right", "wrong"):
            rows = gallery_rows(files, validation, right=kind == "right")
            path = (
                render_gallery(files, rows, out / f"{prefix}matches_{kind}.png") if rows else None
            )
            if path is not None:
                key = f"{prefix}matches_{kind}"
                pictures[f"matches_{kind}"] = Picture(
                    key, f"{name}: queries {kind} at rank 1", path, f"{name}: captions below"
                )
                galleries[kind] = rows
        confused = confusions(validation)
    baseline = {}
    for key in ("val_map5", "test_map5"):
        if files.baseline.get(key) is not None:
            baseline[key.replace("_map5", " MAP@5")] = files.baseline[key]
    page = RunPage(figures, pictures, galleries, confused, headline_settings(files), baseline)
    return page, emb_map


def _combined(run: RunPage, reference: RunPage, out: Path) -> RunPage:
    """The run's curves redrawn with the reference's in the same axes."""
    pictures = dict(run.pictures)
    names = (run.figures.run, reference.figures.run)
    if run.figures.histories or reference.figures.histories:
        fig = training_curves(run.figures.histories, reference.figures.histories, names)
        pictures["training"] = Picture(
            "training",
            "training curves",
            save_png(fig, out / "training.png"),
            f"{names[0]} solid, {names[1]} dashed; {CURVES_NOTE}",
        )
    if run.figures.threshold_curve or reference.figures.threshold_curve:
        ref = (reference.figures.threshold_curve, reference.figures.threshold)
        fig = threshold_curve(run.figures.threshold_curve, run.figures.threshold, ref, names)
        pictures["threshold"] = Picture(
            "threshold",
            "threshold curves",
            save_png(fig, out / "threshold.png"),
            f"{names[0]} solid, {names[1]} dashed; {THRESHOLD_NOTE}",
        )
    return RunPage(run.figures, pictures, run.galleries, run.confusions, run.settings, run.baseline)


# --------------------------------------------------------------------------- figures.json


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> null, numpy scalars -> Python, frames -> records."""
    if isinstance(value, pd.DataFrame):
        return [_clean(r) for r in value.to_dict("records")]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return value.name
    return value


def _piece(page: RunPage, emb_map: EmbeddingMap | None) -> dict[str, Any]:
    f = page.figures
    out: dict[str, Any] = {
        "run": f.run,
        "settings": page.settings,
        "figures": f.scalars(),
        "sets": {
            name: {"note": qs.note, "overall": qs.overall, "per_species": qs.per_species}
            for name, qs in f.sets.items()
        },
        "threshold": {
            "value": f.threshold,
            "source": f.threshold_source,
            "curve": f.threshold_curve,
        },
        "embedding": None if f.embedding is None else vars(f.embedding),
        "training": {f"fold{k}": h for k, h in f.histories.items()},
        "map": None
        if emb_map is None
        else {"method": emb_map.method, "note": emb_map.note, "points": emb_map.points},
        "galleries": {
            kind: [
                {
                    "query": r.query,
                    "individual_id": r.individual_id,
                    "truth": r.truth,
                    "predicted": r.predicted,
                    "score": r.score,
                    "matches": [vars(m) for m in r.matches],
                }
                for r in rows
            ]
            for kind, rows in page.galleries.items()
        },
        "confusions": page.confusions if page.confusions is not None else [],
        "baseline": page.baseline,
        "pictures": {key: p.path.name for key, p in page.pictures.items()},
        "notes": f.notes,
    }
    return _clean(out)


def difference(run: RunFigures, reference: RunFigures) -> dict[str, float | None]:
    """run - reference for every figure both have."""
    mine, theirs = run.scalars(), reference.scalars()
    return {
        key: (None if mine[key] is None or theirs.get(key) is None else mine[key] - theirs[key])
        for key in mine
    }


# --------------------------------------------------------------------------- the report


def write_report(
    layout: RunLayout, reference: RunLayout | None = None, progress: bool = False
) -> Report:
    """Write `layout.report`/index.html, figures.json and the PNGs; see the module docstring."""
    out = layout.report
    out.mkdir(parents=True, exist_ok=True)
    files = read_run(layout)
    figures = run_figures(files)
    alone = reference is None
    page, emb_map = run_page(files, figures, out, progress=progress, curves=alone)
    ref_page, ref_map = None, None
    if reference is not None:
        ref_files = read_run(reference)
        ref_figures = run_figures(ref_files)
        ref_page, ref_map = run_page(ref_files, ref_figures, out, "reference_", progress, False)
        page = _combined(page, ref_page, out)
    data = {
        **_piece(page, emb_map),
        "reference": None if ref_page is None else _piece(ref_page, ref_map),
        "difference": None if ref_page is None else _clean(difference(figures, ref_page.figures)),
    }
    figures_path = write_text(out / "figures.json", json.dumps(data, indent=1, ensure_ascii=False))
    differing = {}
    if reference is not None:
        differing = setting_differences(run_settings(layout), run_settings(reference))
    index = write_text(out / "index.html", render(page, ref_page, differing))
    kept = {p.path.name for p in page.pictures.values()}
    if ref_page is not None:
        kept |= {p.path.name for p in ref_page.pictures.values()}
    for stale in out.glob("*.png"):
        if stale.name not in kept:
            stale.unlink(missing_ok=True)
    return Report(out, index, figures_path, page, ref_page)
