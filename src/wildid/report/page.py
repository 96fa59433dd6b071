"""The report as one self-contained HTML page: tables, and the pictures embedded as PNG.

The page needs nothing but a browser: no script, no stylesheet or font from the network,
every picture a `data:image/png;base64` URI (the same PNGs also lie beside it). Each
section has a fixed id (`SECTIONS`) and each picture `id="picture-<key>"`, which the
browser test and anyone linking to a part of a report rely on. With a reference run,
every number reads `run  reference  difference` and every plot shows both runs.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from wildid.report.figures import COUNTS, FIGURES, IDENTIFICATION, OPEN_SET, RunFigures
from wildid.report.galleries import GalleryRow

SECTIONS = {
    "summary": "Summary",
    "identification": "Identification",
    "open-set": "Open set: new individuals",
    "per-species": "Per species",
    "embedding": "Embedding quality",
    "training": "Training curves",
    "galleries": "Match galleries",
}
SPECIES_COLUMNS = ("map5", "top1", "top5", "map", "baks", "baus")


@dataclass(frozen=True)
class Picture:
    key: str  # training, threshold, map, matches_right, matches_wrong (reference_<key>)
    title: str
    path: Path  # the PNG, beside index.html
    caption: str = ""


@dataclass(frozen=True)
class RunPage:
    """One run's pieces of the page."""

    figures: RunFigures
    pictures: dict[str, Picture]
    galleries: dict[str, list[GalleryRow]] = field(default_factory=dict)  # right, wrong
    confusions: pd.DataFrame | None = None
    settings: dict[str, object] = field(default_factory=dict)  # headline settings
    baseline: dict[str, float | None] = field(default_factory=dict)


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 0 1.2em 3em; color: #222; }
nav a { margin-right: 1em; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ddd; padding-top: .8em; }
table { border-collapse: collapse; margin: .6em 0 1em; }
th, td { border: 1px solid #ddd; padding: .2em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
.ref { color: #777; } .up { color: #1a7f37; } .down { color: #c62828; }
.missing, .note { color: #8a5a00; background: #fff8e1; padding: .3em .6em; }
figure { margin: .8em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12px; }
table.settings td { text-align: left; }
.pair { display: flex; gap: 1em; flex-wrap: wrap; } .pair figure { flex: 1 1 480px; }
ol.captions { font-size: 12px; color: #444; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def _number(value: float | None, counts: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.0f}" if counts else f"{value:.4f}"


def _cell(value: float | None, reference: float | None, with_reference: bool, counts: bool) -> str:
    out = f"<td>{_number(value, counts)}</td>"
    if not with_reference:
        return out
    out += f'<td class="ref">{_number(reference, counts)}</td>'
    if value is None or reference is None or math.isnan(value) or math.isnan(reference):
        return out + "<td>–</td>"
    delta = value - reference
    cls = "up" if delta > 0 else "down" if delta < 0 else ""
    text = f"{delta:+.0f}" if counts else f"{delta:+.4f}"
    return out + f'<td class="{cls}">{text}</td>'


def _head(first: str, columns: Sequence[str], with_reference: bool, names: tuple[str, str]) -> str:
    cells = [f"<th>{_esc(first)}</th>"]
    for column in columns:
        if with_reference:
            cells += [
                f"<th>{_esc(column)}<br>{_esc(names[0])}</th>",
                f'<th class="ref">{_esc(names[1])}</th>',
                "<th>Δ</th>",
            ]
        else:
            cells.append(f"<th>{_esc(column)}</th>")
    return "<tr>" + "".join(cells) + "</tr>"


def figures_table(
    run: RunFigures, reference: RunFigures | None, keys: Sequence[str], names: tuple[str, str]
) -> str:
    """Rows: figures (with what they measure); columns: the query sets."""
    sets = list(run.sets) or []
    if not sets:
        return '<p class="missing">No query set was scored (see the notes above).</p>'
    with_ref = reference is not None
    rows = [_head("figure", sets, with_ref, names)]
    for key in (*COUNTS, *keys):
        label, meaning = FIGURES.get(key, (key.replace("_", " "), ""))
        cells = f'<td title="{_esc(meaning)}">{_esc(label)}</td>'
        for name in sets:
            value = run.sets[name].overall.get(key)
            ref = (
                reference.sets[name].overall.get(key)
                if with_ref and name in reference.sets
                else None
            )
            cells += _cell(value, ref, with_ref, key in COUNTS)
        rows.append(f"<tr>{cells}</tr>")
    legend = "".join(
        f"<li><b>{_esc(FIGURES[k][0])}</b>: {_esc(FIGURES[k][1])}</li>"
        for k in keys
        if k in FIGURES
    )
    return f"<table>{''.join(rows)}</table><ul class='legend'>{legend}</ul>"


def species_table(
    run: RunFigures, reference: RunFigures | None, set_name: str, names: tuple[str, str]
) -> str:
    table = run.sets[set_name].per_species
    ref = None
    if reference is not None and set_name in reference.sets:
        ref = reference.sets[set_name].per_species.set_index("species")
    labels = [FIGURES[k][0] for k in SPECIES_COLUMNS]
    rows = [_head("species", ["queries", *labels], ref is not None, names)]
    for record in table.to_dict("records"):
        species = record["species"]
        cells = f"<td>{_esc(species)}</td>"
        for key in ("queries", *SPECIES_COLUMNS):
            other = None
            if ref is not None and species in ref.index:
                other = float(ref.at[species, key])
            cells += _cell(float(record[key]), other, ref is not None, key == "queries")
        rows.append(f"<tr>{cells}</tr>")
    return f"<h3>{_esc(set_name)}</h3><table>{''.join(rows)}</table>"


def _img(picture: Picture) -> str:
    data = base64.b64encode(picture.path.read_bytes()).decode("ascii")
    caption = f"<figcaption>{_esc(picture.caption)}</figcaption>" if picture.caption else ""
    return (
        f'<figure id="picture-{_esc(picture.key)}"><img alt="{_esc(picture.title)}" '
        f'src="data:image/png;base64,{data}">{caption}</figure>'
    )


def _pictures(run: RunPage, reference: RunPage | None, key: str, missing: str) -> str:
    """A picture of the run (and the reference's beside it, when it has one)."""
    mine = run.pictures.get(key)
    theirs = reference.pictures.get(key) if reference is not None else None
    if mine is None and theirs is None:
        return f'<p class="missing">{_esc(missing)}</p>'
    parts = [_img(p) for p in (mine, theirs) if p is not None]
    if mine is None:
        parts.insert(0, f'<p class="missing">{_esc(missing)}</p>')
    return f'<div class="pair">{"".join(parts)}</div>' if len(parts) > 1 else parts[0]


def _key_values(
    pairs: Mapping[str, object],
    reference: Mapping[str, object] | None,
    names: tuple[str, str] | None = None,
) -> str:
    rows = []
    if names is not None:
        rows.append(
            f'<tr><th></th><th>{_esc(names[0])}</th><th class="ref">{_esc(names[1])}</th></tr>'
        )
    for key, value in pairs.items():
        ref = "" if reference is None else f'<td class="ref">{_esc(reference.get(key, "–"))}</td>'
        rows.append(f"<tr><td>{_esc(key)}</td><td>{_esc(value)}</td>{ref}</tr>")
    return f"<table class='settings'>{''.join(rows)}</table>"


def _frame(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary(
    run: RunPage,
    reference: RunPage | None,
    names: tuple[str, str],
    differing: Mapping[str, tuple[object, object]],
) -> str:
    f = run.figures
    settings = dict(run.settings)
    settings["new_individual threshold"] = (
        "none" if f.threshold is None else f"{f.threshold:.3f} ({f.threshold_source})"
    )
    for key, value in run.baseline.items():
        settings[f"untrained baseline {key}"] = _number(value)
    ref_settings = None
    if reference is not None:
        ref_settings = dict(reference.settings)
        rf = reference.figures
        ref_settings["new_individual threshold"] = (
            "none" if rf.threshold is None else f"{rf.threshold:.3f} ({rf.threshold_source})"
        )
        for key, value in reference.baseline.items():
            ref_settings[f"untrained baseline {key}"] = _number(value)
    head = ""
    if reference is not None:
        head = f"<p>Compared with the reference run <b>{_esc(names[1])}</b> (grey, dashed).</p>"
    notes = [
        *f.notes,
        *(f"{names[1]}: {n}" for n in (reference.figures.notes if reference else [])),
    ]
    note_html = "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
    table = _key_values(settings, ref_settings, names if reference is not None else None)
    if differing:
        table += "<h3>Settings that differ</h3>" + _key_values(
            {k: v[0] for k, v in differing.items()},
            {k: v[1] for k, v in differing.items()},
            names,
        )
    return head + table + note_html


def _captions(run: RunPage, reference: RunPage | None, kind: str) -> str:
    out = []
    for page in (run, reference):
        rows = page.galleries.get(kind, []) if page is not None else []
        if rows:
            head = f"<p>{_esc(page.figures.run)}:</p>" if reference is not None else ""
            items = "".join(f"<li>{_esc(r.caption)}</li>" for r in rows)
            out.append(f"{head}<ol class='captions'>{items}</ol>")
    return "".join(out)


def render(
    run: RunPage,
    reference: RunPage | None = None,
    differing: Mapping[str, tuple[object, object]] | None = None,
) -> str:
    """The whole page (see the module docstring); `differing`: setting -> (run's value,
    reference's value) for the settings the two runs do not share."""
    names = (run.figures.run, reference.figures.run if reference else "")
    ref_f = reference.figures if reference else None
    f = run.figures
    body: dict[str, str] = {}
    body["summary"] = _summary(run, reference, names, differing or {})
    body["identification"] = "".join(
        f"<p>{_esc(qs.name)}: {_esc(qs.note)}.</p>" for qs in f.sets.values()
    ) + figures_table(f, ref_f, IDENTIFICATION, names)
    body["open-set"] = (
        "<p>A query's top-1 is <code>new_individual</code> when its best similarity is below "
        "the threshold tuned on validation.</p>"
        + figures_table(f, ref_f, OPEN_SET, names)
        + _pictures(
            run, reference, "threshold", "No threshold curve (a fixed threshold, or no validation)."
        )
    )
    body["per-species"] = "".join(species_table(f, ref_f, name, names) for name in f.sets) or (
        '<p class="missing">No query set was scored.</p>'
    )
    emb_rows = {}
    for label, figs in ((names[0], f), (names[1], ref_f)):
        if figs is not None and figs.embedding is not None:
            e = figs.embedding
            emb_rows[label] = (e.ami, e.nmi, e.points, e.clusters)
    if emb_rows:
        table = pd.DataFrame(
            [
                {
                    "run": k,
                    "AMI": f"{v[0]:.4f}",
                    "NMI": f"{v[1]:.4f}",
                    "photos": v[2],
                    "clusters": v[3],
                }
                for k, v in emb_rows.items()
            ]
        )
        quality = (
            "<p>k-means of the validation queries' embeddings into as many clusters as they "
            "have individuals, against the true individuals: AMI (chance-corrected, 0 for a "
            "random clustering) and NMI (1: the clusters are the individuals).</p>" + _frame(table)
        )
    else:
        quality = '<p class="missing">No embedding quality: no stored validation embeddings.</p>'
    body["embedding"] = quality + _pictures(
        run, reference, "map", "No embedding map: no stored embeddings."
    )
    body["training"] = _pictures(run, reference, "training", "No training curves: no history.csv.")
    galleries = []
    for key, title in (("matches_right", "right at rank 1"), ("matches_wrong", "wrong at rank 1")):
        galleries.append(f"<h3>Validation queries {title}</h3>")
        galleries.append(
            _pictures(run, reference, key, f"No validation query {title}, or no photos.")
        )
        galleries.append(_captions(run, reference, key.removeprefix("matches_")))
    if run.confusions is not None and not run.confusions.empty:
        galleries.append(
            "<h3>Most often confused (validation, top-1)</h3>" + _frame(run.confusions)
        )
    body["galleries"] = (
        "<p>Each row: the query photo (grey frame), then the nearest photo of each of its "
        "nearest individuals, green when it is the same animal, red when not.</p>"
        + "".join(galleries)
    )
    nav = "".join(f'<a href="#{k}">{_esc(v)}</a>' for k, v in SECTIONS.items())
    sections = "".join(
        f'<section id="{k}"><h2>{_esc(v)}</h2>{body[k]}</section>' for k, v in SECTIONS.items()
    )
    title = f"wildid report: {names[0]}" + (f" vs {names[1]}" if reference else "")
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{_esc(title)}</h1><nav>{nav}</nav>{sections}"
        "</body></html>\n"
    )
