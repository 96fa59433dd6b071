"""Exact top-k inner-product search on whichever backend is fastest where it runs.

Every backend returns the exact answer (the neighbours and float32 similarities of a
float32 brute force over the gallery as stored):

* ``torch``: float32 products in torch (its own GEMM) a chunk of queries at a time, then
  ``topk``. On this project's CPU it is 4x faster than faiss-cpu's bundled OpenBLAS.
* ``bf16``: bfloat16 products (AVX512-BF16 / AMX: about 3.5x float32 here) pick
  candidates, float32 re-scoring of the candidates gives the similarities. A per-query
  bound on the rounding error (`RoundingBound`) says which rows could still reach the
  k-th exact similarity, and every one of them is re-scored. Exact by construction, not
  by luck.
* ``faiss``: faiss's ``IndexFlatIP`` (its BLAS; good in some builds, slow in others).
* ``cuda`` (torch) and ``faiss-gpu`` on a GPU.

`choose_backend` takes a GPU when there is one; on a CPU it times each available backend
on a slice of the actual search (large searches only) and keeps the fastest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wildid.infer.faiss_index import as_f32, build_index, faiss_module, search_index

U_BF16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits, round to nearest)
U_FP32 = 2.0**-24
PIECE = 8192  # gallery rows converted at a time (a float16 memory map is never whole twice)
PROBE_MIN_WORK = 1e12  # multiply-adds below which no probe is worth its time (~3 s of GEMM)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them bfloat16 on a CPU is emulated, and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _pieces(gallery: np.ndarray) -> Iterator[tuple[int, object]]:
    """(first row, float32 tensor) of each PIECE rows of the gallery, in order."""
    import torch

    for start in range(0, len(gallery), PIECE):
        piece = np.array(gallery[start : start + PIECE], dtype=np.float32)  # own, writable
        yield start, torch.from_numpy(piece)


def _table(gallery: np.ndarray, dtype, device: str = "cpu"):
    """The gallery as one torch tensor of `dtype`, converted PIECE rows at a time."""
    import torch

    table = torch.empty(gallery.shape, dtype=dtype, device=device)
    for start, piece in _pieces(gallery):
        table[start : start + len(piece)] = piece.to(device)
    return table


def _outputs(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.empty((len(queries), k), dtype=np.float32),
        np.empty((len(queries), k), dtype=np.int64),
    )


class TorchSearch:
    """Exact top-k by float32 matrix products and `topk` in torch (on `device`)."""

    name = "torch"

    def __init__(self, gallery: np.ndarray, device: str = "cpu") -> None:
        import torch

        self.device = device
        self.table = _table(gallery, torch.float32, device)

    def search(
        self, queries: np.ndarray, k: int, chunk: int = 4096, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        k = max(1, min(k, len(self.table)))
        sims, idx = _outputs(queries, k)
        starts = range(0, len(queries), chunk)
        with torch.inference_mode():
            for start in tqdm(starts, desc="search", disable=not progress, unit="chunk"):
                block = torch.from_numpy(as_f32(queries[start : start + chunk]))
                top = torch.topk(block.to(self.device) @ self.table.T, k, dim=1, sorted=True)
                sims[start : start + len(block)] = top.values.cpu().numpy()
                idx[start : start + len(block)] = top.indices.cpu().numpy()
        return sims, idx


def search_torch(
    gallery: np.ndarray,
    queries: np.ndarray,
    k: int,
    chunk: int = 4096,
    progress: bool = False,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """`TorchSearch` in one call."""
    return TorchSearch(gallery, device).search(queries, k, chunk, progress)


@dataclass(frozen=True)
class RoundingBound:
    """How far a bfloat16 product can be from the float32 one, per query.

    With q~ = bf16(q), g~ = bf16(g): q~.g~ - q.g = dq.g + q.dg + dq.dg, bounded by
    |dq| G + |q| D + |dq| D (Cauchy-Schwarz; G and D the largest |g| and |g~ - g| in the
    gallery, |dq| measured per query); the products of bfloat16 pairs are exact in float32,
    their float32 sum adds at most dim * 2^-24 * |q~| G~ in any summation order; and the
    product is returned in bfloat16, one more relative rounding of 2^-8, applied where the
    bound is used (`lower_cut`). tests/infer/test_exact.py checks the bound holds.
    """

    gallery_norm: float  # G: largest float32 row norm
    gallery_rounding: float  # D: largest |bf16(g) - g|
    gallery_bf16_norm: float  # G~

    @classmethod
    def of_piece(cls, piece) -> RoundingBound:
        """The bound's gallery figures over one float32 tensor of rows."""
        import torch

        rounded = piece.to(torch.bfloat16).float()
        return cls(
            float(piece.norm(dim=1).max()),
            float((rounded - piece).norm(dim=1).max()),
            float(rounded.norm(dim=1).max()),
        )

    def merged(self, other: RoundingBound) -> RoundingBound:
        pairs = zip(astuple(self), astuple(other), strict=True)
        return RoundingBound(*(max(a, b) for a, b in pairs))

    @classmethod
    def of(cls, gallery: np.ndarray) -> RoundingBound:
        bound = cls(0.0, 0.0, 0.0)
        for _, piece in _pieces(gallery):
            bound = bound.merged(cls.of_piece(piece))
        return bound

    def input_error(self, block, rounded, dim: int):
        """Per query: the bound on |q~.g~ - q.g| before the output rounding (a tensor)."""
        q_norm = block.norm(dim=1)
        dq = (rounded.float() - block).norm(dim=1)
        G, D = self.gallery_norm, self.gallery_rounding
        accumulation = dim * U_FP32 * rounded.float().norm(dim=1) * self.gallery_bf16_norm
        return dq * G + q_norm * D + dq * D + accumulation


def lower_cut(floor: np.ndarray, error: np.ndarray) -> np.ndarray:
    """bfloat16 products below this cannot stand for an exact product >= `floor`: an
    exact x comes back as bf16(x + e) with |e| <= error, which is >= x - error - u|.|."""
    base = floor - error
    return base - U_BF16 * np.abs(base) / (1 - 2 * U_BF16) - 1e-7


def bf16_floor(x: np.ndarray) -> np.ndarray:
    """The largest bfloat16 value <= x, each (float32 values a bfloat16 holds exactly).

    bfloat16 is the upper half of a float32: dropping the lower 16 bits rounds toward
    zero, down for x >= 0; a negative x with bits dropped steps one unit further down."""
    f = np.asarray(x, dtype=np.float32)
    f = np.where(f > x, np.nextafter(f, np.float32(-np.inf)), f)
    bits = f.view(np.uint32)
    kept = bits & np.uint32(0xFFFF0000)
    dropped_negative = (bits >> np.uint32(31)).astype(bool) & (bits != kept)
    return np.where(dropped_negative, kept + np.uint32(0x10000), kept).view(np.float32)


GATHER_ROWS = 512  # gallery rows gathered at a time (~9 MiB at 4608-d float32)


class GatherBuffers:
    """One reusable gather buffer per thread. On this project's VM memory freshly taken
    from the system faults in page by page: a new buffer per piece ran 3-5x slower than
    one kept and refilled (measured on the Happywhale-sized benchmark)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.local = threading.local()

    def get(self, rows: int) -> np.ndarray:
        buffer = getattr(self.local, "buffer", None)
        if buffer is None or len(buffer) < rows:
            buffer = self.local.buffer = np.empty((max(rows, GATHER_ROWS), self.dim), np.float32)
        return buffer[:rows]


def _rescore(
    table: np.ndarray,
    block: np.ndarray,
    rows: np.ndarray,
    workers: int = 1,
    buffers: GatherBuffers | None = None,
) -> np.ndarray:
    """Exact float32 products of each query with its candidate rows (`rows` (m, w), -1
    padding at the end of a row, scored -inf). Queries go in order of their candidate
    count, in pieces of at most GATHER_ROWS gathered rows (or one query's), each piece only
    as wide as its longest row, gathered into `buffers`; `workers` threads score pieces
    side by side (numpy's gather holds one core and frees the GIL)."""
    out = np.full(rows.shape, -np.inf, dtype=np.float32)
    counts = np.maximum((rows >= 0).sum(axis=1), 1)
    order = np.argsort(counts, kind="stable")
    buffers = buffers if buffers is not None else GatherBuffers(table.shape[1])
    pieces, i = [], 0
    while i < len(order):
        size = max(1, GATHER_ROWS // int(counts[order[i]]))
        size = max(1, GATHER_ROWS // int(counts[order[min(i + size, len(order)) - 1]]))
        pieces.append(order[i : i + size])
        i += size

    def score(piece: np.ndarray) -> None:
        width = int(counts[piece].max())
        ids = rows[piece, :width]
        vectors = buffers.get(ids.size)
        np.take(table, np.maximum(ids, 0).ravel(), axis=0, out=vectors)
        values = np.matmul(vectors.reshape(*ids.shape, -1), block[piece, :, None])[..., 0]
        out[piece, :width] = np.where(ids >= 0, values, -np.inf)

    if workers <= 1 or len(pieces) == 1:
        for piece in pieces:
            score(piece)
        return out
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        list(pool.map(score, pieces))
    return out


def _padded(mask) -> np.ndarray:
    """The True columns of each row of `mask` (a torch bool tensor), left-aligned, padded
    with -1."""
    import torch

    q, cols = torch.nonzero(mask, as_tuple=True)
    counts = torch.bincount(q, minlength=len(mask)).numpy()
    rows = np.full((len(mask), max(1, int(counts.max(initial=0)))), -1, dtype=np.int64)
    q = q.numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rows[q, np.arange(len(q)) - starts[q]] = cols.numpy()
    return rows


@dataclass
class Bf16Stats:
    """What the certified search did: queries searched, those whose k best bfloat16 rows
    could not be certified alone, and the rows re-scored for them beyond those k."""

    queries: int = 0
    widened: int = 0
    widened_rows: int = 0


class Bf16Search:
    """Exact top-k with bfloat16 products choosing the candidates (see the module doc).

    Per query: the k best rows by the bfloat16 product are re-scored in float32; the
    smallest of those k exact similarities is a floor under the true k-th. Every other row
    whose bfloat16 product, plus the rounding bound, can reach that floor is re-scored
    too, and the best k of all re-scored rows are the answer (ties: the lower row).
    Memory: the gallery in bfloat16 and in float32 (1.4 GiB at 51,033 x 4608), both made
    in one pass over it.
    """

    name = "bf16"

    def __init__(self, gallery: np.ndarray) -> None:
        import torch

        self.table = torch.empty(gallery.shape, dtype=torch.bfloat16)
        in_memory = isinstance(gallery, np.ndarray) and not isinstance(gallery, np.memmap)
        if in_memory and gallery.dtype == np.float32 and gallery.flags.c_contiguous:
            self.rows = gallery
        else:
            self.rows = np.empty(gallery.shape, dtype=np.float32)
        self.bound = RoundingBound(0.0, 0.0, 0.0)
        for start, piece in _pieces(gallery):
            self.table[start : start + len(piece)] = piece
            if self.rows is not gallery:
                self.rows[start : start + len(piece)] = piece.numpy()
            self.bound = self.bound.merged(RoundingBound.of_piece(piece))
        self.workers = torch.get_num_threads()
        self.buffers = GatherBuffers(gallery.shape[1])
        self.stats = Bf16Stats()

    def search(
        self, queries: np.ndarray, k: int, chunk: int = 1024, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        n, dim = self.rows.shape
        k, chunk = max(1, min(k, n)), min(chunk, 1024)  # (chunk, n) bfloat16 products at once
        sims, idx = _outputs(queries, k)
        starts = range(0, len(queries), chunk)
        with torch.inference_mode():
            for start in tqdm(starts, desc="search", disable=not progress, unit="chunk"):
                block = as_f32(queries[start : start + chunk])
                block_t = torch.from_numpy(block)
                rounded = block_t.to(torch.bfloat16)
                error = self.bound.input_error(block_t, rounded, dim).numpy().astype(np.float64)
                coarse = rounded @ self.table.T
                first = torch.topk(coarse, k, dim=1, sorted=False).indices
                first_exact = _rescore(self.rows, block, first.numpy(), self.workers, self.buffers)
                floor = first_exact.min(axis=1).astype(np.float64)
                # rows the bound cannot rule out
                cut = torch.from_numpy(bf16_floor(lower_cut(floor, error))).to(torch.bfloat16)
                reach = coarse >= cut[:, None]
                del coarse
                reach.scatter_(1, first, False)
                wide = _padded(reach)
                rows = np.concatenate([first.numpy(), wide], axis=1)
                values = np.concatenate(
                    [first_exact, _rescore(self.rows, block, wide, self.workers, self.buffers)],
                    axis=1,
                )
                order = np.lexsort((np.where(rows < 0, n, rows), -values), axis=1)[:, :k]
                sims[start : start + len(block)] = np.take_along_axis(values, order, 1)
                idx[start : start + len(block)] = np.take_along_axis(rows, order, 1)
                widened = (wide >= 0).sum(axis=1)
                self.stats.queries += len(block)
                self.stats.widened += int((widened > 0).sum())
                self.stats.widened_rows += int(widened.sum())
        return sims, idx


def search_bf16(
    gallery: np.ndarray,
    queries: np.ndarray,
    k: int,
    chunk: int = 1024,
    progress: bool = False,
    stats: Bf16Stats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`Bf16Search` in one call; `stats` receives what it did."""
    searcher = Bf16Search(gallery)
    if stats is not None:
        searcher.stats = stats
    return searcher.search(queries, k, chunk, progress)


class FaissFlatSearch:
    """faiss's exact IndexFlatIP on the CPU (its BLAS: good in some builds, slow in others)."""

    name = "faiss"

    def __init__(self, gallery: np.ndarray) -> None:
        self.index = build_index(gallery, "flat", "cpu")

    def search(
        self, queries: np.ndarray, k: int, chunk: int = 4096, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        return search_index(self.index, queries, k, chunk, progress)


EXACT_SEARCHES = {cls.name: cls for cls in (TorchSearch, Bf16Search, FaissFlatSearch)}


def cpu_backends() -> dict[str, type]:
    """The exact CPU searches that can run here, by name."""
    names = ["torch"]
    if cpu_has_native_bf16():
        names.append("bf16")
    if faiss_module() is not None:
        names.append("faiss")
    return {name: EXACT_SEARCHES[name] for name in names}


@dataclass(frozen=True)
class BackendChoice:
    name: str
    estimate_s: dict[str, float]  # each backend's estimated seconds (empty: no probe)


def choose_backend(
    gallery: np.ndarray,
    queries: np.ndarray,
    k: int,
    backends: dict[str, type] | None = None,
    probe_queries: int = 256,
    probe_rows: int = 16384,
) -> BackendChoice:
    """The fastest exact CPU backend for this search.

    Searches under PROBE_MIN_WORK multiply-adds take torch (nothing to gain is worth a
    probe). For larger ones each backend is built on the first `probe_rows` gallery rows
    and searched with the first `probe_queries` queries (after a warm-up) for the k rows
    of the same rank in the slice (k x slice / gallery: the bfloat16 search's re-scoring
    grows with k, and at the same rank with the rows, like everything else); its time is
    scaled to the whole search (building by rows, searching by rows x queries) and the
    fastest kept. Every backend is exact: the choice changes the time, never the answer.
    """
    backends = backends if backends is not None else cpu_backends()
    work = float(len(gallery)) * len(queries) * gallery.shape[1]
    if len(backends) == 1 or work < PROBE_MIN_WORK:
        return BackendChoice("torch" if "torch" in backends else next(iter(backends)), {})
    rows = gallery[: min(len(gallery), probe_rows)]
    sample = queries[: min(len(queries), probe_queries)]
    row_scale, query_scale = len(gallery) / len(rows), len(queries) / len(sample)
    probe_k = max(1, round(k / row_scale))  # the same rank among the rows: k scales with them
    estimate = {}
    for name, backend in backends.items():
        backend(rows[:1024]).search(sample[:16], probe_k)  # warm-up: kernels, allocator, pages
        start = time.perf_counter()
        searcher = backend(rows)
        built = time.perf_counter()
        searcher.search(sample, probe_k)
        searched = time.perf_counter()
        estimate[name] = round(
            (built - start) * row_scale + (searched - built) * row_scale * query_scale, 2
        )
    return BackendChoice(min(estimate, key=estimate.__getitem__), estimate)
