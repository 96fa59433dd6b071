"""Plots saved beside the metrics: what people would rather see than read."""

from __future__ import annotations

from pathlib import Path


def plot_threshold_curve(
    curve: list[tuple[float, float]], threshold: float | None, title: str, path: str | Path
) -> Path | None:
    """MAP@5 on validation against the new_individual threshold, best marked."""
    if not curve or threshold is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = zip(*curve, strict=True)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(xs, ys, marker=".")
    ax.axvline(threshold, color="red", linestyle="--",
               label=f"chosen {threshold:.2f}")
    ax.set(xlabel="new_individual threshold (cosine)", ylabel="validation MAP@5",
           title=title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
