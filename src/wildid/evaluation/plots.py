"""Plots saved beside the metrics: what people would rather see than read."""

from __future__ import annotations

from pathlib import Path


def plot_threshold_curve(
    curve: list[tuple[float, float]], threshold: float | None, title: str, path: str | Path
) -> Path | None:
    """MAP@5 on validation against the new_individual threshold, best marked."""
    if not curve or threshold is None:
        return None
    # A bare Figure, not pyplot: no backend switch (matplotlib.use("Agg") here would
    # silently stop a notebook's inline plots) and no global figure state to leak.
    from matplotlib.figure import Figure

    xs, ys = zip(*curve, strict=True)
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.plot(xs, ys, marker=".")
    ax.axvline(threshold, color="red", linestyle="--", label=f"chosen {threshold:.2f}")
    ax.set(xlabel="new_individual threshold (cosine)", ylabel="validation MAP@5", title=title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def sample_grid(competition, individuals: int = 4, per_individual: int = 5):
    """A matplotlib Figure: one row per most-photographed train individual, boxes drawn.

    Works for any competition folder (fullbody boxes green, backfin red when boxes.csv
    exists), so the data notebook shows the same picture for synthetic and real data.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from wildid.data.dataset import read_rgb

    train = competition.train
    counts = train.groupby("individual_id").size().reset_index(name="n")
    top = counts.sort_values(["n", "individual_id"], ascending=[False, True]).head(individuals)
    boxes = competition.boxes
    fig, axes = plt.subplots(
        len(top),
        per_individual,
        squeeze=False,
        figsize=(2.2 * per_individual, 1.6 * max(len(top), 1)),
    )
    for ax in axes.flat:
        ax.axis("off")
    for row, ind in enumerate(top["individual_id"]):
        rows = train[train["individual_id"] == ind].sort_values("image").head(per_individual)
        for col, (image, species) in enumerate(zip(rows["image"], rows["species"], strict=True)):
            ax = axes[row, col]
            ax.imshow(read_rgb(competition.image_path("train", image)))
            if col == 0:
                ax.set_title(f"{ind}  {species}", fontsize=7, loc="left")
            if boxes is None:
                continue
            for box in boxes[boxes["image"] == image].itertuples():
                colour = "lime" if box.kind == "fullbody" else "red"
                ax.add_patch(
                    Rectangle(
                        (box.x1, box.y1),
                        box.x2 - box.x1,
                        box.y2 - box.y1,
                        fill=False,
                        edgecolor=colour,
                        linewidth=0.8,
                    )
                )
    fig.tight_layout()
    return fig


MATCH, MISMATCH, QUERY = (40, 170, 40), (40, 40, 200), (160, 160, 160)  # BGR frames


def match_gallery(
    rows: list[tuple[str, list[tuple[str, bool]]]],
    path: str | Path,
    tile: int = 160,
    frame: int = 6,
) -> Path:
    """An image grid, one row per query: the query photo (grey frame), then its best
    matches in rank order, framed green when they show the same individual and red when
    not. A person judges a re-identification model faster from this than from MAP@5."""
    import cv2
    import numpy as np

    from wildid.data.transforms import letterbox
    from wildid.io import atomic_path

    fit = letterbox(tile - 2 * frame)

    def framed(file: str, colour: tuple[int, int, int]) -> np.ndarray:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"{file}: cannot read image (missing or corrupt file).")
        for step in fit:
            image = step(image=image)["image"]
        return cv2.copyMakeBorder(
            image, frame, frame, frame, frame, cv2.BORDER_CONSTANT, value=colour
        )

    width = 1 + max((len(matches) for _, matches in rows), default=0)
    blank = np.full((tile, tile, 3), 255, dtype=np.uint8)
    lines = []
    for query, matches in rows:
        tiles = [framed(query, QUERY)]
        tiles += [framed(file, MATCH if same else MISMATCH) for file, same in matches]
        tiles += [blank] * (width - len(tiles))
        lines.append(np.hstack(tiles))
    path = Path(path)
    with atomic_path(path) as tmp:  # the temporary file keeps the suffix: cv2's format
        if not cv2.imwrite(str(tmp), np.vstack(lines)):
            raise OSError(f"{path}: could not write the image.")
    return path
