"""The report's plots as matplotlib Figures: training curves, threshold curve, map.

Bare `Figure`s, never pyplot (as wildid.evaluation.plots): no backend switch; a notebook
shows them with `show(fig)` and the report saves them (`save_png`).
A reference run, when given, is drawn into the same axes (dashed) so the two read as one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from wildid.io import atomic_path
from wildid.report.embedding_map import EmbeddingMap

TOP_INDIVIDUALS = 9  # the map colours the most photographed individuals, greys the rest
GREY = "#c8c8c8"


def _figure(width: float, height: float, panels: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def save_png(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a Figure as PNG atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def show(fig, dpi: int = 110) -> None:
    """Show a Figure in a notebook as the PNG the report embeds (whatever the backend:
    a bare Figure has no inline display until pyplot has drawn something)."""
    import io

    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    display(Image(data=buffer.getvalue()))


CURVES = (
    ("loss", "training loss", ("loss",)),
    ("val_map5", "validation MAP@5", ("val_map5", "val_map5_closed")),
    ("lr", "learning rate", ("lr",)),
)


def training_curves(
    histories: Mapping[int, pd.DataFrame],
    reference: Mapping[int, pd.DataFrame] | None = None,
    names: tuple[str, str] = ("run", "reference"),
):
    """Loss, validation MAP@5 (open set, and closed set dotted) and learning rate per
    epoch; one colour per fold, the reference run dashed in grey."""
    fig, axes = _figure(11, 3.0, len(CURVES))
    runs = [(histories, names[0], "-", None)]
    if reference:
        runs.append((reference, names[1], "--", "grey"))
    for ax, (_, title, columns) in zip(axes, CURVES, strict=True):
        for tables, name, style, colour in runs:
            for k, history in sorted(tables.items()):
                for column in columns:
                    if column not in history or history[column].isna().all():
                        continue
                    closed = column.endswith("_closed")
                    label = f"{name} fold{k}" + (" closed set" if closed else "")
                    ax.plot(
                        history["epoch"],
                        history[column],
                        linestyle=":" if closed else style,
                        marker="." if len(history) < 30 else None,
                        color=colour,
                        label=label,
                    )
        ax.set(xlabel="epoch", title=title)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def threshold_curve(
    curve: list[tuple[float, float]],
    threshold: float | None,
    reference: tuple[list[tuple[float, float]], float | None] | None = None,
    names: tuple[str, str] = ("run", "reference"),
):
    """Validation MAP@5 against the new_individual threshold, the chosen one marked."""
    fig, axes = _figure(5.5, 3.3)
    ax = axes[0]
    runs = [(curve, threshold, names[0], "-", "C0")]
    if reference is not None:
        runs.append((*reference, names[1], "--", "grey"))
    for points, chosen, name, style, colour in runs:
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, linestyle=style, marker=".", color=colour, label=name)
        if chosen is not None:
            ax.axvline(chosen, color=colour, linestyle=":", label=f"{name}: {chosen:.2f}")
    ax.set(xlabel="new_individual threshold (cosine)", ylabel="validation MAP@5")
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _colours(names: list[str]) -> dict[str, object]:
    """A colour per name, never the grey of the other points (tab10 for up to 9 names,
    else tab20; both without their greys), cycling past the palette's end."""
    from matplotlib import colormaps

    if len(names) <= 9:
        palette = [colormaps["tab10"](i) for i in range(10) if i != 7]
    else:
        palette = [colormaps["tab20"](i) for i in range(20) if i not in (14, 15)]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def embedding_map_figure(emb_map: EmbeddingMap, title: str = "", top: int = TOP_INDIVIDUALS):
    """Two panels of the same map: coloured by individual (the `top` most photographed,
    the rest grey) and by species. Dots: training part; triangles: validation queries;
    black crosses: held-out individuals."""
    points = emb_map.points
    fig, axes = _figure(11, 4.8, 2)
    counts = points.groupby("individual_id").size().reset_index(name="n")
    counts = counts.sort_values(["n", "individual_id"], ascending=[False, True])
    chosen = counts["individual_id"].head(top).tolist()
    species = sorted(points["species"].unique())
    palettes = (
        ("individual_id", _colours(chosen), f"top {len(chosen)} individuals"),
        ("species", _colours(species), "species"),
    )
    for ax, (column, colours, heading) in zip(axes, palettes, strict=True):
        colour = points[column].map(colours)
        known = colour.notna().to_numpy()
        rest = np.asarray([GREY] * len(points), dtype=object)
        for shape, mask in (
            ("o", (points["role"] == "train").to_numpy()),
            ("^", ((points["role"] == "val") & ~points["held_out"]).to_numpy()),
        ):
            for sel, colours_of in ((mask & ~known, rest), (mask & known, colour.to_numpy())):
                if sel.any():
                    ax.scatter(
                        points["x"][sel],
                        points["y"][sel],
                        c=list(colours_of[sel]),
                        marker=shape,
                        s=14 if shape == "o" else 28,
                        linewidths=0,
                    )
        held = points["held_out"].to_numpy()
        if held.any():
            ax.scatter(points["x"][held], points["y"][held], c="black", marker="x", s=30)
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker="o", linestyle="", color=c, label=str(name)[:18])
            for name, c in colours.items()
        ]
        handles += [
            Line2D([], [], marker="^", linestyle="", color="dimgrey", label="validation query"),
            Line2D([], [], marker="x", linestyle="", color="black", label="held-out individual"),
        ]
        ax.legend(handles=handles, fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        ax.set(title=f"{title} by {heading}".strip(), xticks=[], yticks=[])
    fig.tight_layout()
    return fig
