"""Retrieval at full Happywhale scale: search, group by individual, insert new, write.

Random embeddings shaped like the competition's 4608-d ensemble (3 backbones x 3 folds x
512): 51,033 gallery images of 15,587 individuals (heavy-tailed: most seen once, a few
hundreds of times) and 27,956 queries, a fifth of them individuals absent from the
gallery. Each image is its individual's centre plus noise, so the predictions are
meaningful and the run checks itself (MAP@5) besides timing itself.

Each method runs in a fresh subprocess so its peak RSS (getrusage ru_maxrss) is its own:
  reference  today's exact search, float32 torch products (`retrieval.index=exact`), on
           all queries (`--reference-queries N`: the first N): the answer to reproduce.
  ours     wildid.infer.retrieval.search with the default `retrieval.index=flat` (the
           fastest exact backend here, chosen by a probe: `backend`, `estimate_s`), float16
           memory maps, query chunks + vectorised grouping + threshold tuned on a tenth of
           the queries + insertion + writing submission.csv; `seconds` is all of it, data
           generation excluded; recall and misses against the reference.
  sklearn  NearestNeighbors(algorithm="brute") on a subset of the queries (same gallery),
           its time extrapolated linearly per query (`sklearn_queries` says how many).
  approx   an IVF (or HNSW) index on a subset of queries: time and recall@k against exact.

    python benchmarks/bench_retrieval.py            # full scale (~5 min on 2 cores)
    python benchmarks/bench_retrieval.py --scale 0.05
The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GALLERY, QUERIES, INDIVIDUALS, DIM = 51_033, 27_956, 15_587, 4608
NEW_FRACTION = 0.2  # of queries showing individuals absent from the gallery
NOISE = 2.5  # per-image noise relative to the individual's centre (cosine to it ~0.37)
TUNE_FRACTION = 0.1  # queries whose truth tunes the threshold (a validation stand-in)


def heavy_tailed_counts(individuals: int, images: int, rng: np.random.Generator) -> np.ndarray:
    """Images per individual: >= 1 each, the rest Zipf-like (Happywhale: ~60% seen once)."""
    weights = (np.arange(individuals) + 20.0) ** -1.2
    counts = 1 + rng.multinomial(images - individuals, weights / weights.sum())
    return rng.permutation(counts)


def _write_rows(path: Path, centres: np.ndarray, owners: np.ndarray, rng, chunk=4096) -> None:
    """Unit rows centre[owner] + noise, written as float16 in chunks (bounded memory)."""
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float16, shape=(len(owners), centres.shape[1])
    )
    for start in range(0, len(owners), chunk):
        block = centres[owners[start : start + chunk]].astype(np.float32)
        block += NOISE * rng.standard_normal(block.shape, dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + chunk] = block
    out.flush()
    del out


def generate(folder: Path, scale: float, dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n_gallery, n_queries = int(GALLERY * scale), int(QUERIES * scale)
    n_known = max(2, int(INDIVIDUALS * scale))
    n_new = max(1, int(n_known * 0.25))
    counts = heavy_tailed_counts(n_known, n_gallery, rng)
    centres = rng.standard_normal((n_known + n_new, dim), dtype=np.float32).astype(np.float16)
    gallery_owner = np.repeat(np.arange(n_known), counts)
    is_new = rng.random(n_queries) < NEW_FRACTION
    query_owner = np.where(
        is_new,
        rng.integers(n_known, n_known + n_new, n_queries),
        gallery_owner[rng.integers(0, n_gallery, n_queries)],
    )
    _write_rows(folder / "gallery.npy", centres, gallery_owner, rng)
    _write_rows(folder / "queries.npy", centres, query_owner, rng)
    names = np.array([f"ind{i:05d}" for i in range(n_known + n_new)])
    np.save(folder / "gallery_labels.npy", names[gallery_owner])
    np.save(folder / "query_truth.npy", np.where(is_new, "new_individual", names[query_owner]))
    return {
        "gallery": n_gallery,
        "queries": n_queries,
        "individuals": n_known,
        "dim": dim,
        "singletons": int((counts == 1).sum()),
        "max_images": int(counts.max()),
    }


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# --------------------------------------------------------------------------- workers


def worker_reference(folder: Path, k: int, threads: int) -> dict:
    """Today's exact search (float32 torch products, `retrieval.index=exact`): the answer
    every exact backend must reproduce, saved for the others' recall."""
    import torch

    from wildid.infer.retrieval import search

    torch.set_num_threads(threads)
    gallery = np.load(folder / "gallery.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy", mmap_mode="r")
    n = int(os.environ.get("BENCH_REFERENCE", len(queries)))
    t = time.perf_counter()
    sims, idx = search(gallery, queries[:n], k, kind="exact")
    seconds = time.perf_counter() - t
    np.save(folder / "exact_idx.npy", idx)
    np.save(folder / "exact_sims.npy", sims)
    return {"search_seconds": seconds, "queries": n, "peak_rss_gib": peak_rss_gib()}


def exactness(sims: np.ndarray, idx: np.ndarray, folder: Path) -> dict:
    """Recall against the reference, and how many misses are not float ties at the k-th
    (two rows whose similarities differ by float32 rounding may swap at the boundary)."""
    from wildid.infer.retrieval import recall_at_k

    exact_idx, exact_sims = np.load(folder / "exact_idx.npy"), np.load(folder / "exact_sims.npy")
    m = len(exact_idx)
    missing = ~(exact_idx[:, :, None] == idx[:m, None, :]).any(axis=2)
    tie = np.abs(exact_sims - sims[:m, -1:]) <= 1e-6  # a miss at the k-th's similarity
    return {
        "recall_at_k": recall_at_k(exact_idx, idx[:m]),
        "misses": int(missing.sum()),
        "misses_not_ties": int((missing & ~tie).sum()),
        "top1_agreement": float((exact_idx[:, 0] == idx[:m, 0]).mean()),
        "max_similarity_difference": float(np.abs(np.sort(exact_sims) - np.sort(sims[:m])).max()),
        "reference_queries": m,
    }


def worker_ours(folder: Path, k: int, threads: int, kind: str = "flat") -> dict:
    import torch

    from wildid.evaluation.submission import write_submission
    from wildid.infer.faiss_index import faiss_module
    from wildid.infer.openset import predict, tune_threshold
    from wildid.infer.retrieval import best_per_individual, search

    faiss = faiss_module()
    if faiss is not None:
        faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
    times, info = {}, {}
    start = t = time.perf_counter()
    gallery = np.load(folder / "gallery.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy", mmap_mode="r")
    labels = np.load(folder / "gallery_labels.npy")
    truth = np.load(folder / "query_truth.npy")
    sims, idx = search(gallery, queries, k, kind=kind, info=info)
    times["search"] = time.perf_counter() - t
    t = time.perf_counter()
    ranking = best_per_individual(sims, idx, labels)
    times["aggregate"] = time.perf_counter() - t
    t = time.perf_counter()
    tune = int(len(truth) * TUNE_FRACTION)
    sub = type(ranking)(ranking.codes[:tune], ranking.scores[:tune], ranking.individuals)
    grid = np.round(np.arange(-0.1, 1.0001, 0.01), 2)
    threshold, _ = tune_threshold(sub, truth[:tune].tolist(), grid)
    predictions = predict(ranking, threshold)
    times["threshold"] = time.perf_counter() - t
    t = time.perf_counter()
    images = [f"q{i:06d}.jpg" for i in range(len(predictions))]
    write_submission(dict(zip(images, predictions, strict=True)), folder / "submission.csv")
    times["write"] = time.perf_counter() - t
    total = time.perf_counter() - start
    hits = [
        1 / (p.index(t_) + 1) if t_ in p else 0.0 for p, t_ in zip(predictions, truth, strict=True)
    ]
    return {
        "seconds": total,
        "peak_rss_gib": peak_rss_gib(),
        **{f"{name}_seconds": v for name, v in times.items()},
        "threshold": float(threshold),
        "map5": float(np.mean(hits)),
        **info,
        **exactness(sims, idx, folder),
    }


def worker_sklearn(folder: Path, k: int, threads: int, n_queries: int) -> dict:
    from sklearn.neighbors import NearestNeighbors

    gallery = np.load(folder / "gallery.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy", mmap_mode="r")
    t = time.perf_counter()
    model = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine", n_jobs=threads)
    model.fit(np.asarray(gallery, dtype=np.float32))
    fit = time.perf_counter() - t
    subset = np.asarray(queries[:n_queries], dtype=np.float32)
    t = time.perf_counter()
    _, idx = model.kneighbors(subset)
    search = time.perf_counter() - t
    exact = np.load(folder / "exact_idx.npy")
    m = min(len(exact), len(idx))
    agree = float((idx[:m, 0] == exact[:m, 0]).mean())
    return {
        "fit_seconds": fit,
        "search_seconds": search,
        "queries": n_queries,
        "peak_rss_gib": peak_rss_gib(),
        "top1_agrees_with_ours": agree,
    }


def worker_approx(folder: Path, k: int, threads: int, kind: str, n_queries: int) -> dict:
    from wildid.infer.faiss_index import build_index, faiss_module, search_index
    from wildid.infer.retrieval import recall_at_k

    faiss_module().omp_set_num_threads(threads)
    gallery = np.load(folder / "gallery.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy", mmap_mode="r")
    exact = np.load(folder / "exact_idx.npy")[:n_queries]
    t = time.perf_counter()
    index = build_index(gallery, kind, device="cpu")
    build = time.perf_counter() - t
    t = time.perf_counter()
    _, idx = search_index(index, queries[: len(exact)], k)
    search = time.perf_counter() - t
    return {
        "kind": kind,
        "build_seconds": build,
        "search_seconds": search,
        "queries": len(exact),
        "recall_at_k": recall_at_k(exact, idx),
        "recall_at_1": recall_at_k(exact[:, :1], idx[:, :1]),
        "peak_rss_gib": peak_rss_gib(),
    }


def _spawn(args: list[str], threads: int, subset: int, reference: int = 0) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "BENCH_SUBSET": str(subset),
    }
    if reference:
        env["BENCH_REFERENCE"] = str(reference)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {args[:2]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of full size")
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sklearn-queries", type=int, default=1000)
    parser.add_argument("--approx", choices=["ivf", "hnsw", "none"], default="ivf")
    parser.add_argument("--approx-queries", type=int, default=2000)
    parser.add_argument(
        "--index", default="flat", help="retrieval.index of ours (default flat: the default)"
    )
    parser.add_argument(
        "--reference-queries",
        type=int,
        default=0,
        help="queries the float32 reference searches, for recall (0: all)",
    )
    parser.add_argument(
        "--worker", choices=["ours", "reference", "sklearn", "approx"], help=argparse.SUPPRESS
    )
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "ours":
        print(json.dumps(worker_ours(args.folder, args.k, args.threads, args.index)))
        return
    if args.worker == "reference":
        print(json.dumps(worker_reference(args.folder, args.k, args.threads)))
        return
    if args.worker == "sklearn":
        print(json.dumps(worker_sklearn(args.folder, args.k, args.threads, args.sklearn_queries)))
        return
    if args.worker == "approx":
        print(
            json.dumps(
                worker_approx(args.folder, args.k, args.threads, args.approx, args.approx_queries)
            )
        )
        return
    with tempfile.TemporaryDirectory(prefix="bench_retrieval_") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        shape = generate(folder, args.scale, args.dim)
        print(f"data: {shape} in {time.perf_counter() - t:.0f} s", flush=True)
        common = ["--folder", str(folder), "--k", str(args.k), "--threads", str(args.threads)]
        subset = max(args.sklearn_queries, args.approx_queries)
        reference = _spawn(
            ["--worker", "reference", *common], args.threads, subset, args.reference_queries
        )
        print(f"reference (float32 torch, index=exact): {reference}", flush=True)
        ours = _spawn(["--worker", "ours", *common, "--index", args.index], args.threads, subset)
        print(f"ours: {ours}", flush=True)
        n_sk = min(args.sklearn_queries, shape["queries"])
        sk = _spawn(
            ["--worker", "sklearn", *common, "--sklearn-queries", str(n_sk)], args.threads, subset
        )
        sk_full = sk["search_seconds"] * shape["queries"] / n_sk + sk["fit_seconds"]
        print(f"sklearn: {sk}; extrapolated to all queries: {sk_full:.1f} s", flush=True)
        approx = None
        if args.approx != "none":
            approx = _spawn(
                [
                    "--worker",
                    "approx",
                    *common,
                    "--approx",
                    args.approx,
                    "--approx-queries",
                    str(min(args.approx_queries, shape["queries"])),
                ],
                args.threads,
                subset,
            )
            print(f"approx: {approx}", flush=True)
    ours_search = ours["search_seconds"]
    result = {
        "benchmark": "retrieval",
        "scale": args.scale,
        **shape,
        "k": args.k,
        "threads": args.threads,
        "index": args.index,
        "backend": ours["backend"],
        "estimate_s": ours.get("estimate_s", {}),
        "seconds": round(ours["seconds"], 2),
        "peak_rss_gib": round(ours["peak_rss_gib"], 3),
        "stages_seconds": {
            n.removesuffix("_seconds"): round(v, 2)
            for n, v in ours.items()
            if n.endswith("_seconds")
        },
        "map5": round(ours["map5"], 4),
        "threshold": ours["threshold"],
        "recall_at_k": ours["recall_at_k"],
        "misses": ours["misses"],
        "misses_not_ties": ours["misses_not_ties"],
        "top1_agreement": ours["top1_agreement"],
        "max_similarity_difference": ours["max_similarity_difference"],
        "reference_queries": ours["reference_queries"],
        "reference_seconds": round(reference["search_seconds"], 2),
        "reference_peak_rss_gib": round(reference["peak_rss_gib"], 3),
        "reference_over_ours": round(
            reference["search_seconds"] * shape["queries"] / reference["queries"] / ours_search, 2
        ),
        "sklearn_queries": n_sk,
        "sklearn_seconds_extrapolated": round(sk_full, 1),
        "sklearn_peak_rss_gib": round(sk["peak_rss_gib"], 3),
        "sklearn_top1_agreement": sk["top1_agrees_with_ours"],
        # like for like: the nearest-neighbour search of each
        "sklearn_over_ours": round(sk_full / ours_search, 2),
        "sklearn_over_ours_total": round(
            (sk_full + ours["seconds"] - ours_search) / ours["seconds"], 2
        ),
        "targets": {"seconds": 60, "peak_rss_gib": 4, "recall_at_k": 1.0},
    }
    if "bf16" in ours:
        result["bf16"] = ours["bf16"]
    if approx is not None:
        per_query = approx["search_seconds"] / approx["queries"]
        result["approx"] = {
            "kind": approx["kind"],
            "recall_at_k": round(approx["recall_at_k"], 4),
            "recall_at_1": round(approx["recall_at_1"], 4),
            "queries": approx["queries"],
            "build_seconds": round(approx["build_seconds"], 1),
            "search_seconds_extrapolated": round(per_query * shape["queries"], 1),
            "peak_rss_gib": round(approx["peak_rss_gib"], 3),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
