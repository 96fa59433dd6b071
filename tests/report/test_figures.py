"""The report's per-query figures, overall and per species, against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from wildid.report.embedding_map import project
from wildid.report.figures import add_neighbour_scores, per_species, query_table, summarise

NEW = "new_individual"
# (truth, predictions, species): AP@5, top-1 hit, top-5 hit
QUERIES = [
    ("A", ["A", "B", "C", "D", "E"], "s1"),  # 1, 1, 1
    ("A", ["B", "A", "C", "D", "E"], "s1"),  # 1/2, 0, 1
    ("B", [NEW, "B", "A", "C", "D"], "s2"),  # 1/2, 0, 1
    (NEW, [NEW, "A", "B", "C", "D"], "s2"),  # 1, 1, 1
    (NEW, ["C", "D", "E", "A", "B"], "s2"),  # 0, 0, 0
]


def _table() -> pd.DataFrame:
    truths, predictions, species = zip(*QUERIES, strict=True)
    return query_table([f"q{i}.jpg" for i in range(5)], truths, predictions, species)


def test_individual_level_figures_by_hand() -> None:
    figures = summarise(_table())
    assert figures["queries"] == 5 and figures["known_queries"] == 3 and figures["new_queries"] == 2
    assert figures["map5"] == pytest.approx((1 + 0.5 + 0.5 + 1 + 0) / 5)
    assert figures["top1"] == pytest.approx(2 / 5)
    assert figures["top5"] == pytest.approx(4 / 5)
    # BAKS: A right 1 of 2, B right 0 of 1 -> (1/2 + 0) / 2; BAUS: 1 of 2 called new
    assert figures["baks"] == pytest.approx(0.25)
    assert figures["baus"] == pytest.approx(0.5)
    assert figures["baks_baus_gmean"] == pytest.approx(math.sqrt(0.25 * 0.5))
    assert math.isnan(figures["precision@1"]) and math.isnan(figures["map"])  # no embeddings


def test_per_species_rows_then_all() -> None:
    table = per_species(_table()).set_index("species")
    assert list(table.index) == ["s1", "s2", "all"]
    assert table.at["s1", "map5"] == pytest.approx(0.75)
    assert table.at["s2", "map5"] == pytest.approx(0.5)
    assert table.at["s1", "baks"] == pytest.approx(0.5) and math.isnan(table.at["s1", "baus"])
    assert table.at["s1", "baks_baus_gmean"] == 0.0  # no unknown sample: 0, as AnimalCLEF
    assert table.at["all", "map5"] == pytest.approx(0.6)


def test_neighbour_columns_for_the_rows_given() -> None:
    gallery = np.array([[1, 0], [0, 1]], dtype=np.float32)  # photos of A and of B
    queries = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)  # q0 (A), q2 (B)
    table = add_neighbour_scores(
        _table(), np.array([0, 2]), queries, gallery, ["gA", "gB"], ["A", "B"]
    )
    p1 = table["precision@1"]
    assert p1[0] == 1.0 and p1[2] == 1.0 and p1[[1, 3, 4]].isna().all()
    assert table.at[0, "nearest"] == ["gA", "gB"] and table.at[1, "nearest"] == []
    figures = summarise(table)
    assert figures["precision@1"] == 1.0 and figures["map"] == 1.0 and figures["recall@5"] == 1.0


def test_map_projection_falls_back_to_pca_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    rows = np.random.default_rng(0).standard_normal((12, 6)).astype(np.float32)
    xy, method, note = project(rows[:3])
    assert method == "pca" and xy.shape == (3, 2) and "too few" in note
    monkeypatch.setitem(sys.modules, "umap", None)  # umap-learn not installed
    xy, method, note = project(rows)
    assert method == "pca" and xy.shape == (12, 2) and "umap-learn is not installed" in note
