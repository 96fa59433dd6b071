"""Plots: files for the run folder, figures for the notebooks, no global backend change."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from wildid.data.competition import load_competition
from wildid.evaluation.plots import plot_threshold_curve, sample_grid


def test_threshold_curve_is_saved_without_switching_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("matplotlib.use() would stop a notebook's inline figures")

    monkeypatch.setattr(matplotlib, "use", refuse)
    path = plot_threshold_curve(
        [(0.1, 0.2), (0.3, 0.5), (0.5, 0.4)], 0.3, "t", tmp_path / "out" / "threshold.png"
    )
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_threshold_curve([], None, "t", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_sample_grid_rows_per_individual_with_boxes(tiny_comp: Path) -> None:
    import matplotlib.pyplot as plt

    fig = sample_grid(load_competition(tiny_comp), individuals=3, per_individual=4)
    try:
        axes = fig.get_axes()
        assert len(axes) == 12
        shown = [ax for ax in axes if ax.images]
        assert len(shown) >= 3  # the top individuals have photos to show
        assert all(ax.patches for ax in shown)  # boxes.csv drawn on every shown photo
    finally:
        plt.close(fig)


def test_match_gallery_frames_matches_by_correctness(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    from wildid.evaluation.plots import MATCH, MISMATCH, match_gallery

    files = []
    for k in range(3):
        file = tmp_path / f"{k}.png"
        cv2.imwrite(str(file), np.full((30, 50, 3), 40 * k, dtype=np.uint8))
        files.append(str(file))
    rows = [(files[0], [(files[1], True), (files[2], False)]), (files[1], [(files[0], False)])]
    out = match_gallery(rows, tmp_path / "out" / "matches.png", tile=40, frame=4)
    grid = cv2.imread(str(out))
    assert grid.shape == (80, 120, 3)  # 2 rows x (query + 2 matches), 40-px tiles
    assert tuple(grid[1, 41]) == MATCH and tuple(grid[1, 81]) == MISMATCH
    assert tuple(grid[41, 41]) == MISMATCH and (grid[41:, 81:] == 255).all()  # padded row
    with pytest.raises(OSError, match="missing.png"):
        match_gallery([(str(tmp_path / "missing.png"), [])], tmp_path / "x.png")
