"""Retrieval: nearest gallery images by cosine, grouped into a ranking of individuals.

Search is exact inner product on unit vectors (= cosine) on the fastest exact backend
where it runs (`wildid.infer.exact`: faiss-gpu or torch on a GPU; torch's float32 GEMM,
certified bfloat16 products or faiss on a CPU), so faiss is an optional dependency. An
approximate faiss index (IVF or HNSW, `wildid.infer.faiss_index`) is an option for
galleries too large for exact search, and `recall_at_k` says what it costs. An
individual's score for a query is its
best-matching gallery image's similarity, which is what the top Happywhale solutions used:
one good match is strong evidence, while a mean would punish individuals photographed in
many poses. Optionally that score is blended with the ArcFace head's class cosine, as the
1st-place solution did.

Everything after the search is vectorised over (queries x neighbours) arrays: at full
competition scale a Python loop over 28k x 50 neighbours would cost more than the search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from wildid.infer.exact import EXACT_SEARCHES, TorchSearch, as_f32, choose_backend
from wildid.infer.faiss_index import (
    RetrievalError,
    build_index,
    has_gpu,
    search_index,
)

PAD = -1  # code of an empty slot in a Ranking row (its score is -inf)


@dataclass(frozen=True)
class Ranking:
    """Per query: candidate individuals, best first, with their similarities.

    Arrays rather than lists of lists so that threshold tuning and submission writing stay
    vectorised. `codes[q, r]` indexes `individuals`; rows with fewer candidates than
    columns are padded with PAD codes and -inf scores.
    """

    codes: np.ndarray  # (queries, m) int
    scores: np.ndarray  # (queries, m) float32, non-increasing along each row
    individuals: np.ndarray  # (n,) str, the vocabulary the codes index

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def labels(self) -> list[list[str]]:
        """Candidate labels per query (padding dropped): for inspection and small data."""
        names = self.individuals
        return [[str(names[c]) for c in row if c != PAD] for row in self.codes]

    @property
    def top1(self) -> np.ndarray:
        """Each query's best score (-inf when it has no candidate)."""
        if self.scores.shape[1] == 0:
            return np.full(len(self), -np.inf, dtype=np.float32)
        return self.scores[:, 0]

    @classmethod
    def from_lists(
        cls, labels: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]
    ) -> Ranking:
        """Build from per-query label and score lists (each best first)."""
        individuals = np.array(sorted({str(x) for row in labels for x in row}), dtype=object)
        lookup = {name: i for i, name in enumerate(individuals)}
        width = max((len(row) for row in labels), default=0)
        codes = np.full((len(labels), width), PAD, dtype=np.int64)
        values = np.full((len(labels), width), -np.inf, dtype=np.float32)
        for q, (row, sims) in enumerate(zip(labels, scores, strict=True)):
            codes[q, : len(row)] = [lookup[str(x)] for x in row]
            values[q, : len(row)] = sims
        return cls(codes, values, individuals)


# --------------------------------------------------------------------------- search


def exact_backend(device: str = "auto") -> str:
    """Where `flat` (exact) search runs: "faiss-gpu" when faiss sees a GPU, else "cuda"
    (torch) when torch does, else "cpu" (`wildid.infer.exact.choose_backend` picks among
    torch, bf16 and faiss there). `device` cpu/gpu forces a side."""
    import torch

    if device != "cpu" and has_gpu():
        return "faiss-gpu"
    if device != "cpu" and torch.cuda.is_available():
        return "cuda"
    if device == "gpu":
        raise RetrievalError(
            "retrieval.device=gpu but neither faiss nor torch sees a GPU; "
            "set retrieval.device=auto."
        )
    return "cpu"


def search(
    gallery: np.ndarray,
    queries: np.ndarray,
    k: int,
    kind: str = "flat",
    info: dict | None = None,
    **options,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (similarities, indices) of each query among the gallery rows.

    `kind`: flat (exact, on the fastest backend where it runs: faiss-gpu or torch on a GPU;
    on a CPU torch, certified bfloat16 or faiss, chosen by `choose_backend`), exact
    (float32 torch products always), bf16 (certified bfloat16 always; exact too), ivf or
    hnsw (faiss approximate). `info`, when given, receives the backend used and, for a
    probe or the bfloat16 search, what they did.
    """
    chunk = options.pop("query_chunk", 4096)
    progress = options.pop("progress", False)
    info = info if info is not None else {}
    if len(gallery) == 0 or len(queries) == 0:
        return (np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
    backend = {"bf16": "bf16", "exact": "torch"}.get(kind, kind)
    if kind == "flat":
        backend = {"faiss-gpu": "faiss-gpu", "cuda": "cuda"}.get(
            exact_backend(options.get("device", "auto")), "cpu"
        )
        if backend == "cpu":
            choice = choose_backend(gallery, queries, k)
            backend, info["estimate_s"] = choice.name, choice.estimate_s
            if progress and choice.estimate_s:
                print(f"exact search on {backend} (estimated seconds {choice.estimate_s})")
    info["backend"] = backend
    if backend == "cuda":
        return TorchSearch(gallery, "cuda").search(queries, k, chunk, progress)
    if backend in EXACT_SEARCHES:
        searcher = EXACT_SEARCHES[backend](gallery)
        found = searcher.search(
            queries, k, chunk if backend != "bf16" else min(chunk, 1024), progress
        )
        if backend == "bf16":
            info["bf16"] = asdict(searcher.stats)
        return found
    index = build_index(gallery, "flat" if backend == "faiss-gpu" else kind, **options)
    return search_index(index, queries, k, chunk, progress)


def recall_at_k(exact: np.ndarray, approx: np.ndarray) -> float:
    """Fraction of the exact top-k neighbours that the approximate search also returned."""
    if exact.size == 0:
        return float("nan")
    found = (approx[:, None, :] == exact[:, :, None]).any(axis=2) & (exact >= 0)
    return float(found.sum() / max(1, (exact >= 0).sum()))


# --------------------------------------------------------------------------- grouping


def encode_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vocabulary sorted, integer code of each label)."""
    individuals, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    return individuals.astype(object), codes.reshape(-1)


def group_best(sims: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, keep each code's best similarity; return (codes, scores) best first.

    Vectorised: sort each row by similarity (stable, so ties keep search order), then by
    code (stable, so the first of a code is its best), mark first occurrences, and move
    the kept entries left. Negative codes (faiss's -1 for a missing neighbour) are dropped.
    """
    q, k = codes.shape
    if k == 0:
        return codes.astype(np.int64), sims.astype(np.float32)
    by_sim = np.argsort(-sims, axis=1, kind="stable")
    sims = np.take_along_axis(sims, by_sim, 1)
    codes = np.take_along_axis(codes, by_sim, 1)
    by_code = np.argsort(codes, axis=1, kind="stable")
    sorted_codes = np.take_along_axis(codes, by_code, 1)
    first = np.ones((q, k), dtype=bool)
    first[:, 1:] = sorted_codes[:, 1:] != sorted_codes[:, :-1]
    first &= sorted_codes >= 0
    keep = np.zeros((q, k), dtype=bool)
    np.put_along_axis(keep, by_code, first, 1)
    width = int(keep.sum(axis=1).max()) if q else 0
    left = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    kept = np.take_along_axis(keep, left, 1)
    out_codes = np.where(kept, np.take_along_axis(codes, left, 1), PAD)
    out_sims = np.where(kept, np.take_along_axis(sims, left, 1), -np.inf).astype(np.float32)
    return out_codes.astype(np.int64), out_sims


def best_per_individual(
    similarities: np.ndarray, indices: np.ndarray, gallery_labels: np.ndarray
) -> Ranking:
    """Group each query's neighbours by individual, keeping the best similarity of each.

    Ties between individuals keep the order the search returned them in (nearest first).
    """
    individuals, gallery_codes = encode_labels(gallery_labels)
    codes = np.where(indices >= 0, gallery_codes[np.clip(indices, 0, None)], PAD)
    return Ranking(*group_best(similarities, codes), individuals)


def rank_individuals(
    gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray, k: int, **options
) -> Ranking:
    """Search, then group by individual. `options` go to `search` (index kind, device...)."""
    similarities, indices = search(gallery, queries, k, **options)
    return best_per_individual(similarities, indices, np.asarray(gallery_labels))


def search_options(retrieval) -> dict:
    """`search` keyword arguments from a RetrievalConfig."""
    return {
        "kind": retrieval.index,
        "device": retrieval.device,
        "nlist": retrieval.nlist,
        "nprobe": retrieval.nprobe,
        "hnsw_m": retrieval.hnsw_m,
        "ef_search": retrieval.ef_search,
        "query_chunk": retrieval.query_chunk,
    }


# --------------------------------------------------------------------------- fusion


def _recode(ranking: Ranking, individuals: np.ndarray) -> np.ndarray:
    """The ranking's codes re-expressed in another (sorted, superset) vocabulary."""
    mapped = np.searchsorted(individuals, ranking.individuals.astype(str)).astype(np.int64)
    if len(mapped) and not np.array_equal(individuals[mapped], ranking.individuals):
        raise ValueError("a ranking names individuals missing from the fused vocabulary.")
    return np.where(ranking.codes >= 0, mapped[np.clip(ranking.codes, 0, None)], PAD)


def stack_rankings(rankings: Sequence[Ranking]) -> Ranking:
    """One Ranking holding the queries of several, over the union of their individuals."""
    individuals = np.array(
        sorted(set().union(*(r.individuals.astype(str) for r in rankings))), dtype=object
    )
    width = max(r.codes.shape[1] for r in rankings)
    codes = np.full((sum(len(r) for r in rankings), width), PAD, dtype=np.int64)
    scores = np.full(codes.shape, -np.inf, dtype=np.float32)
    start = 0
    for r in rankings:
        rows = slice(start, start + len(r))
        codes[rows, : r.codes.shape[1]] = _recode(r, individuals)
        scores[rows, : r.codes.shape[1]] = r.scores
        start += len(r)
    return Ranking(codes, scores, individuals)


def _floor(scores: np.ndarray) -> np.ndarray:
    """Each row's lowest finite score: an upper bound for individuals it did not list."""
    finite = np.where(np.isfinite(scores), scores, np.inf)
    low = finite.min(axis=1) if scores.shape[1] else np.zeros(len(scores))
    return np.where(np.isfinite(low), low, 0.0).astype(np.float32)


def _top(dense: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    m = min(m, dense.shape[1])
    part = (
        np.argpartition(-dense, m - 1, axis=1)[:, :m]
        if m < dense.shape[1]
        else np.tile(np.arange(dense.shape[1]), (len(dense), 1))
    )
    values = np.take_along_axis(dense, part, 1)
    order = np.lexsort((part, -values), axis=1)  # best first; ties by code
    return np.take_along_axis(part, order, 1), np.take_along_axis(values, order, 1)


def fuse(
    rankings: Sequence[Ranking],
    weights: Sequence[float] | None = None,
    m: int = 50,
    extra: tuple[Callable[[int, int], np.ndarray], float] | None = None,
    chunk: int = 1024,
) -> Ranking:
    """Weighted mean of each individual's score over several rankings (score-level fusion).

    An individual a ranking did not list gets that row's lowest listed score (its score
    there can be no higher). `extra` = (function (start, stop) -> those queries' dense
    scores (queries, individuals) in the fused vocabulary, weight) adds one more source,
    e.g. ArcFace class cosines, computed a chunk at a time. Works on
    `chunk` queries at a time as dense (queries x individuals) arrays, so memory stays
    bounded and nothing loops over neighbours in Python.
    """
    individuals = np.array(
        sorted(set().union(*(r.individuals.astype(str) for r in rankings))), dtype=object
    )
    weights = np.ones(len(rankings)) if weights is None else np.asarray(weights, dtype=float)
    codes = [_recode(r, individuals) for r in rankings]
    total = weights.sum() + (extra[1] if extra is not None else 0.0)
    n_queries = len(rankings[0])
    out_codes, out_scores = [], []
    for start in range(0, n_queries, chunk):
        stop = min(n_queries, start + chunk)
        rows = np.arange(stop - start)[:, None]
        dense = np.zeros((stop - start, len(individuals)), dtype=np.float32)
        for ranking, code, weight in zip(rankings, codes, weights, strict=True):
            block = np.repeat(_floor(ranking.scores[start:stop])[:, None], len(individuals), 1)
            valid = code[start:stop] >= 0
            block[np.broadcast_to(rows, valid.shape)[valid], code[start:stop][valid]] = (
                ranking.scores[start:stop][valid]
            )
            dense += weight * block
        if extra is not None:
            dense += extra[1] * np.asarray(extra[0](start, stop), dtype=np.float32)
        top_codes, top_scores = _top(dense / total, m)
        out_codes.append(top_codes)
        out_scores.append(top_scores.astype(np.float32))
    return Ranking(np.concatenate(out_codes), np.concatenate(out_scores), individuals)


@dataclass(frozen=True)
class ClassCentres:
    """The ArcFace head's class centres: unit rows, `subcenters` consecutive rows a class."""

    weights: np.ndarray  # (classes * subcenters, dim) float32
    labels: np.ndarray  # (classes,) individual ids
    subcenters: int = 1


def class_cosines(
    queries: np.ndarray, centres: ClassCentres, individuals: np.ndarray, chunk: int = 4096
) -> np.ndarray:
    """Cosine of each query to each individual's class centre, in `individuals` order.

    Individuals the head never saw (held out of its training) get the row's lowest cosine.
    """
    column = np.searchsorted(individuals.astype(str), centres.labels.astype(str))
    known = (column < len(individuals)) & (
        individuals[np.clip(column, 0, len(individuals) - 1)] == centres.labels
    )
    out = np.empty((len(queries), len(individuals)), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        block = as_f32(queries[start : start + chunk]) @ centres.weights.T
        block = block.reshape(len(block), -1, centres.subcenters).max(axis=2)
        dense = np.repeat(block.min(axis=1, keepdims=True), len(individuals), 1)
        dense[:, column[known]] = block[:, known]
        out[start : start + len(block)] = dense
    return out


def blend_with_head(
    ranking: Ranking, queries: np.ndarray, centres: ClassCentres, weight: float
) -> Ranking:
    """(1 - weight) * best retrieval cosine + weight * ArcFace class cosine, re-ranked."""
    if weight <= 0:
        return ranking

    def cosines(start: int, stop: int) -> np.ndarray:
        return class_cosines(queries[start:stop], centres, ranking.individuals)

    return fuse([ranking], [1.0 - weight], m=ranking.codes.shape[1], extra=(cosines, weight))
