"""faiss indexes: the exact flat one (for GPUs and where faiss's BLAS is good) and the
approximate IVF and HNSW ones for galleries too large for exact search. faiss is optional:
`faiss_module` says whether it is installed."""

from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from wildid.errors import WildidError


class RetrievalError(WildidError, ValueError):
    """A search cannot run as configured; the message says what to change."""


def as_f32(rows: np.ndarray) -> np.ndarray:
    """Rows as contiguous float32 (a copy only where they are not already)."""
    return np.ascontiguousarray(rows, dtype=np.float32)


def faiss_module() -> ModuleType | None:
    """faiss if it is installed (faiss-cpu or faiss-gpu), else None."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


def _faiss(kind: str) -> ModuleType:
    faiss = faiss_module()
    if faiss is None:
        raise RetrievalError(
            f"retrieval.index={kind} needs faiss: `pip install faiss-cpu` (or wildid[faiss]), "
            "or use retrieval.index=flat, which is exact without it."
        )
    return faiss


def has_gpu() -> bool:
    faiss = faiss_module()
    return faiss is not None and getattr(faiss, "get_num_gpus", lambda: 0)() > 0


def build_index(
    gallery: np.ndarray,
    kind: str = "flat",
    device: str = "auto",
    nlist: int | None = None,
    nprobe: int = 32,
    hnsw_m: int = 32,
    ef_search: int = 256,
    chunk: int = 8192,
    seed: int = 0,
) -> Any:  # a faiss.Index
    """A faiss inner-product index over the gallery rows (float16 memory maps welcome).

    Rows are added in float32 chunks, so a float16 gallery never exists twice in float32.
    "ivf" clusters the gallery into `nlist` cells and searches `nprobe` of them; "hnsw" is
    a proximity graph. Both trade recall for speed; check it with `recall_at_k`.
    """
    faiss = _faiss(kind)
    n, dim = gallery.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        # sqrt(n) cells trained on 50 points each: k-means on 4608-d vectors costs
        # (sample x cells x dim), so 4 * sqrt(n) cells would take longer than exact search.
        cells = nlist or max(1, min(n // 39, int(math.sqrt(n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, size=min(n, 50 * cells), replace=False)
        index.train(as_f32(gallery[np.sort(sample)]))
        index.nprobe = min(nprobe, cells)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
    else:
        raise RetrievalError(f"retrieval.index '{kind}': use flat, exact, ivf, hnsw or bf16.")
    for start in range(0, n, chunk):
        index.add(as_f32(gallery[start : start + chunk]))
    if device == "gpu" and not has_gpu():
        raise RuntimeError(
            "retrieval.device=gpu but faiss sees no GPU; install faiss-gpu "
            "or set retrieval.device=auto."
        )
    if device != "cpu" and has_gpu() and kind != "hnsw":  # faiss has no GPU HNSW
        index = faiss.index_cpu_to_all_gpus(index)
    return index


def search_index(
    index: Any, queries: np.ndarray, k: int, chunk: int = 4096, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (similarities, indices) per query, searched `chunk` queries at a time."""
    k = max(1, min(k, index.ntotal))
    sims = np.empty((len(queries), k), dtype=np.float32)
    idx = np.empty((len(queries), k), dtype=np.int64)
    starts = range(0, len(queries), chunk)
    for start in tqdm(starts, desc="search", disable=not progress, unit="chunk", leave=False):
        block = as_f32(queries[start : start + chunk])
        sims[start : start + len(block)], idx[start : start + len(block)] = index.search(block, k)
    return sims, idx
