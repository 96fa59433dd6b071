"""Exact search backends: the bfloat16 search is exact by construction, the chooser picks
the fastest backend and never changes the answer."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from wildid.infer import exact
from wildid.infer.embed import l2_normalise
from wildid.infer.exact import (
    Bf16Search,
    Bf16Stats,
    RoundingBound,
    bf16_floor,
    choose_backend,
    lower_cut,
    search_bf16,
    search_torch,
)
from wildid.infer.retrieval import search


def _same_answer(a, b, atol=1e-5):
    """Same neighbour sets and similarities; order may differ only between float ties."""
    (sims_a, idx_a), (sims_b, idx_b) = a, b
    assert np.allclose(sims_a, sims_b, atol=atol)
    for ia, ib, sa, sb in zip(idx_a, idx_b, sims_a, sims_b, strict=True):
        for ids, sims, other in ((ia, sa, ib), (ib, sb, ia)):
            only = np.isin(ids, other, invert=True)  # a swap at the k-th must be a tie
            assert (np.abs(sims[only] - sims[-1]) < atol).all()


def _crowded(rng, n=3000, dim=256, families=30):
    """Rows in tight families: dozens of near-equal similarities at every k-th."""
    base = l2_normalise(rng.standard_normal((families, dim)))
    rows = np.repeat(base, n // families, 0) + 2e-3 * rng.standard_normal((n, dim))
    return l2_normalise(rows)


def test_rounding_bound_covers_every_bf16_product():
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((800, 512)).astype(np.float32) * rng.uniform(0.5, 2, (800, 1))
    queries = torch.from_numpy(rng.standard_normal((60, 512)).astype(np.float32) * 3)
    error = RoundingBound.of(gallery).input_error(queries, queries.bfloat16(), 512).numpy()
    coarse = (queries.bfloat16() @ torch.from_numpy(gallery).bfloat16().T).float().numpy()
    truth = queries.numpy().astype(np.float64) @ gallery.T.astype(np.float64)
    # the property the search relies on: a product >= x never comes back below the cut
    assert (coarse >= lower_cut(truth, error[:, None])).all()
    slack = np.abs(coarse - truth) / (error[:, None] + 2**-8 * np.abs(coarse))
    assert slack.max() < 1.0


def test_bf16_floor_is_the_largest_bfloat16_at_or_below():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(5000) * 10.0 ** rng.integers(-6, 3, 5000), [0.0, 1.0]])
    floor = bf16_floor(x)
    as_bf16 = torch.from_numpy(floor).bfloat16().float().numpy()
    assert np.array_equal(as_bf16, floor)  # held exactly by a bfloat16
    assert (floor <= x).all()
    bits = floor.view(np.uint32).astype(np.int64)  # the next bfloat16 up is above x
    above = np.where(floor >= 0, bits + 0x10000, bits - 0x10000).astype(np.uint32)
    assert (above.view(np.float32).astype(np.float64) > x).all()


def test_threaded_rescoring_matches_one_thread():
    rng = np.random.default_rng(4)
    table = rng.standard_normal((3000, 64)).astype(np.float32)
    block = rng.standard_normal((200, 64)).astype(np.float32)
    rows = rng.integers(0, len(table), (200, 40))
    rows[rng.random(rows.shape) < 0.3] = -1  # ragged rows, padding anywhere is scored -inf
    rows = -np.sort(-rows, axis=1)  # padding at the end of each row, as the search makes it
    serial = exact._rescore(table, block, rows, workers=1)
    threaded = exact._rescore(table, block, rows, workers=2)
    assert np.array_equal(serial, threaded)
    expected = np.einsum("qd,qwd->qw", block, table[np.maximum(rows, 0)])
    assert np.allclose(np.where(rows >= 0, expected, -np.inf), serial, atol=1e-4)


def test_one_pass_tables_match_their_parts(tmp_path):
    rng = np.random.default_rng(5)
    gallery = (rng.standard_normal((exact.PIECE + 300, 16)) * 2).astype(np.float16)
    np.save(tmp_path / "g.npy", gallery)
    mapped = np.load(tmp_path / "g.npy", mmap_mode="r")
    searcher = Bf16Search(mapped)
    assert searcher.bound == RoundingBound.of(gallery)
    assert np.array_equal(searcher.rows, gallery.astype(np.float32))
    assert torch.equal(searcher.table, torch.from_numpy(gallery.astype(np.float32)).bfloat16())
    own = np.ascontiguousarray(gallery, dtype=np.float32)
    assert Bf16Search(own).rows is own  # a float32 array in memory is not copied


@pytest.mark.parametrize("case", ["random", "crowded", "float32", "k_over_n"])
def test_bf16_search_is_the_float32_answer(case, tmp_path):
    rng = np.random.default_rng(1)
    k = 20
    if case == "crowded":
        gallery = _crowded(rng).astype(np.float16)
        queries = _crowded(rng, n=120)
    else:
        gallery = l2_normalise(rng.standard_normal((2000, 128))).astype(np.float16)
        queries = l2_normalise(rng.standard_normal((150, 128)))
    if case == "float32":
        gallery = gallery.astype(np.float32) + 1e-4 * rng.standard_normal(gallery.shape)
        gallery = gallery.astype(np.float32)
    if case == "k_over_n":
        gallery, k = gallery[:15], 40
    path = tmp_path / "gallery.npy"
    np.save(path, gallery)
    mapped = np.load(path, mmap_mode="r")
    stats = Bf16Stats()
    found = search_bf16(mapped, queries, k, chunk=64, stats=stats)
    _same_answer(found, search_torch(gallery, queries, k))
    assert stats.queries == len(queries)
    assert (np.diff(found[0], axis=1) <= 0).all()
    if case == "crowded":  # the k best bfloat16 rows alone would have been wrong
        coarse = (
            torch.from_numpy(queries).bfloat16()
            @ torch.from_numpy(gallery.astype(np.float32)).bfloat16().T
        )
        naive = torch.topk(coarse.float(), k, dim=1).indices.numpy()
        exact_idx = search_torch(gallery, queries, k)[1]
        assert any(set(a) != set(b) for a, b in zip(naive, exact_idx, strict=True))
        assert stats.widened > 0 and stats.widened_rows > 0


def test_flat_search_reports_its_backend_and_answers_exactly():
    rng = np.random.default_rng(2)
    gallery = l2_normalise(rng.standard_normal((500, 32))).astype(np.float16)
    queries = l2_normalise(rng.standard_normal((30, 32)))
    info = {}
    flat = search(gallery, queries, 10, info=info)
    assert info["backend"] == "torch" and info["estimate_s"] == {}  # too small to probe
    bf16_info = {}
    _same_answer(search(gallery, queries, 10, kind="bf16", info=bf16_info), flat)
    assert bf16_info["backend"] == "bf16" and bf16_info["bf16"]["queries"] == 30


def test_chooser_probes_large_searches_and_keeps_the_fastest():
    calls = []

    class Probe:
        delay = 0.0

        def __init__(self, gallery):
            self.rows = len(gallery)

        def search(self, queries, k):
            calls.append((type(self).__name__, self.rows, len(queries), k))
            time.sleep(self.delay)

    class Slow(Probe):
        delay = 0.05

    dim = 1000
    huge = np.broadcast_to(np.zeros((1, dim), np.float32), (100_000, dim))  # no memory
    many = np.broadcast_to(np.zeros((1, dim), np.float32), (20_000, dim))
    choice = choose_backend(huge, many, 50, {"slow": Slow, "fast": Probe})
    assert choice.name == "fast" and set(choice.estimate_s) == {"slow", "fast"}
    # 0.05 s on 16,384 rows x 256 queries, scaled to 100,000 x 20,000
    assert choice.estimate_s["slow"] == pytest.approx(0.05 * 100_000 / 16384 * 20_000 / 256, 0.3)
    assert ("Slow", 16384, 256, 8) in calls  # a slice, not the whole search
    assert {k for *_, k in calls} == {round(50 * 16384 / 100_000)}  # k at the same rank
    small = choose_backend(huge[:100], many[:100], 50, {"slow": Slow, "torch": Probe})
    assert small.name == "torch" and small.estimate_s == {}


def test_backends_offered_follow_the_machine(monkeypatch):
    monkeypatch.setattr(exact, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(exact, "faiss_module", lambda: None)
    assert set(exact.cpu_backends()) == {"torch"}
    monkeypatch.setattr(exact, "cpu_has_native_bf16", lambda: True)
    assert set(exact.cpu_backends()) == {"torch", "bf16"}
