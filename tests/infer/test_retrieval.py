"""Retrieval: exact search, vectorised grouping by individual, fusion, approximate recall."""

from __future__ import annotations

import numpy as np
import pytest

from wildid.infer import exact, faiss_index
from wildid.infer.embed import l2_normalise
from wildid.infer.exact import search_torch
from wildid.infer.faiss_index import build_index, search_index
from wildid.infer.retrieval import (
    PAD,
    ClassCentres,
    Ranking,
    RetrievalError,
    best_per_individual,
    blend_with_head,
    class_cosines,
    exact_backend,
    fuse,
    group_best,
    rank_individuals,
    recall_at_k,
    search,
)


def _reference(sims, idx, labels):
    """The obvious loop: first (= best) occurrence of each individual, in search order."""
    out = []
    for row_s, row_i in zip(sims, idx, strict=True):
        seen = {}
        for s, j in sorted(zip(row_s, row_i, strict=True), key=lambda p: -p[0]):
            if j >= 0 and labels[j] not in seen:
                seen[str(labels[j])] = float(s)
        out.append(seen)
    return out


def test_individual_reached_by_several_neighbours_keeps_its_best():
    sims = np.array([[0.9, 0.8, 0.7, 0.6]], dtype=np.float32)
    idx = np.array([[2, 0, 3, 1]])
    labels = np.array(["b", "c", "a", "a"])  # "a" is reached by neighbours 2 and 3
    ranking = best_per_individual(sims, idx, labels)
    assert ranking.labels == [["a", "b", "c"]]
    assert ranking.scores[0].tolist() == pytest.approx([0.9, 0.8, 0.6])


def test_ties_keep_search_order():
    sims = np.array([[0.5, 0.5, 0.5]], dtype=np.float32)
    idx = np.array([[1, 0, 2]])
    ranking = best_per_individual(sims, idx, np.array(["z", "y", "x"]))
    assert ranking.labels == [["y", "z", "x"]]


def test_missing_neighbours_are_dropped_and_rows_padded():
    sims = np.array([[0.9, 0.2, -np.inf], [0.3, 0.3, 0.1]], dtype=np.float32)
    idx = np.array([[0, 0, -1], [1, 2, 0]])
    ranking = best_per_individual(sims, idx, np.array(["a", "b", "b"]))
    assert ranking.labels == [["a"], ["b", "a"]]
    assert ranking.codes[0, 1] == PAD and ranking.scores[0, 1] == -np.inf


def test_grouping_matches_the_loop_on_random_data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, size=60).astype(str)
    sims = np.sort(rng.random((200, 25)).astype(np.float32), axis=1)[:, ::-1]
    sims[:, 5] = sims[:, 4]  # exact ties
    idx = rng.integers(0, 60, size=(200, 25))
    ranking = best_per_individual(sims, idx, labels)
    for q, expected in enumerate(_reference(sims, idx, labels)):
        assert ranking.labels[q] == list(expected)
        assert ranking.scores[q, : len(expected)].tolist() == pytest.approx(list(expected.values()))


def test_group_best_sorts_unsorted_input():
    codes, scores = group_best(np.array([[0.1, 0.9, 0.5]]), np.array([[3, 3, 1]]))
    assert codes.tolist() == [[3, 1]] and scores[0].tolist() == pytest.approx([0.9, 0.5])


def test_exact_search_finds_the_true_nearest_and_handles_float16():
    rng = np.random.default_rng(1)
    gallery = l2_normalise(rng.standard_normal((300, 32)))
    queries = l2_normalise(gallery[:50] + 0.05 * rng.standard_normal((50, 32)))
    sims, idx = search(gallery.astype(np.float16), queries.astype(np.float16), 5, query_chunk=7)
    assert (idx[:, 0] == np.arange(50)).all()
    expected = np.sort(queries @ gallery.T, axis=1)[:, ::-1][:, :5]
    assert np.allclose(sims, expected, atol=2e-3)


def test_k_larger_than_gallery_and_empty_inputs():
    gallery = l2_normalise(np.eye(3, 8))
    sims, idx = search(gallery, gallery, 10)
    assert sims.shape == (3, 3)
    ranking = rank_individuals(gallery, np.array(["a", "b", "a"]), np.zeros((0, 8)), 5)
    assert len(ranking) == 0


def test_approximate_indexes_report_recall_against_exact():
    rng = np.random.default_rng(2)
    gallery = l2_normalise(rng.standard_normal((2000, 16)))
    queries = l2_normalise(rng.standard_normal((100, 16)))
    _, exact = search(gallery, queries, 10)
    assert recall_at_k(exact, exact) == 1.0
    for kind, options in (("ivf", {"nlist": 16, "nprobe": 16}), ("hnsw", {"ef_search": 200})):
        _, approx = search_index(build_index(gallery, kind, **options), queries, 10)
        assert recall_at_k(exact, approx) > 0.9, kind
    _, poor = search_index(build_index(gallery, "ivf", nlist=32, nprobe=1), queries, 10)
    assert recall_at_k(exact, poor) < 1.0
    with pytest.raises(ValueError, match="flat, exact, ivf, hnsw or bf16"):
        build_index(gallery, "lsh")


def test_exact_search_without_faiss_returns_faiss_flat_ranking(monkeypatch):
    """`flat` on a CPU is torch products (faiss optional) with faiss's exact answer."""
    assert exact_backend() == "cpu"  # no GPU here
    rng = np.random.default_rng(3)
    gallery = l2_normalise(rng.standard_normal((5000, 64))).astype(np.float16)
    queries = l2_normalise(rng.standard_normal((300, 64))).astype(np.float16)
    faiss_sims, faiss_idx = search_index(build_index(gallery, "flat"), queries, 20, chunk=128)
    exact_sims, exact_idx = search_torch(gallery, queries, 20, chunk=128)
    assert np.array_equal(exact_idx, faiss_idx)
    assert np.allclose(exact_sims, faiss_sims, atol=1e-5)
    for module in (exact, faiss_index):  # as if faiss were not installed
        monkeypatch.setattr(module, "faiss_module", lambda: None)
    sims, idx = search(gallery, queries, 20, query_chunk=128)
    assert np.array_equal(idx, faiss_idx) and np.allclose(sims, faiss_sims, atol=1e-5)
    labels = np.array([f"id{i % 700}" for i in range(len(gallery))])
    ranked = rank_individuals(gallery, labels, queries, 20)
    assert ranked.labels[0] and len(ranked) == len(queries)
    with pytest.raises(RetrievalError, match="retrieval.index=ivf needs faiss"):
        search(gallery, queries, 5, kind="ivf")


def test_fuse_averages_scores_with_floor_for_unlisted():
    one = Ranking.from_lists([["a", "b"]], [[0.9, 0.5]])
    two = Ranking.from_lists([["b", "c"]], [[0.8, 0.6]])
    fused = fuse([one, two], [1.0, 1.0], m=3)
    # a: (0.9 + floor 0.6) / 2, b: (0.5 + 0.8) / 2, c: (floor 0.5 + 0.6) / 2
    assert fused.labels == [["a", "b", "c"]]
    assert fused.scores[0].tolist() == pytest.approx([0.75, 0.65, 0.55])
    weighted = fuse([one, two], [3.0, 1.0], m=1)
    assert weighted.labels == [["a"]]


def test_head_blend_uses_class_cosines_and_floors_unknown_classes():
    queries = l2_normalise(np.array([[1.0, 0.0], [0.0, 1.0]]))
    centres = ClassCentres(
        l2_normalise(np.array([[1.0, 0.0], [0.0, 1.0]])), np.array(["a", "b"], dtype=object)
    )
    individuals = np.array(["a", "b", "c"], dtype=object)
    cos = class_cosines(queries, centres, individuals)
    assert np.allclose(cos, [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    ranking = Ranking.from_lists([["c", "a"], ["c", "b"]], [[0.6, 0.5], [0.6, 0.5]])
    assert blend_with_head(ranking, queries, centres, 0.0) is ranking
    blended = blend_with_head(ranking, queries, centres, 0.5)
    assert [row[0] for row in blended.labels] == ["a", "b"]


def test_bf16_search_matches_exact_neighbours_and_similarities():
    rng = np.random.default_rng(3)
    gallery = l2_normalise(rng.standard_normal((500, 64))).astype(np.float16)
    queries = l2_normalise(rng.standard_normal((40, 64)))
    exact_sims, exact_idx = search(gallery, queries, 10)
    sims, idx = search(gallery, queries, 10, kind="bf16", query_chunk=16)
    assert recall_at_k(exact_idx, idx) > 0.97
    assert (idx[:, 0] == exact_idx[:, 0]).all()
    assert np.allclose(sims[:, 0], exact_sims[:, 0], atol=1e-5)  # rescored in float32
    assert (np.diff(sims, axis=1) <= 0).all()
