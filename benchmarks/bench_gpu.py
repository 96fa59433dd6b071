"""GPU proof of the competition configs (issue 17): one short script for a time-boxed lease.

For each full-size config (configs/happywhale/: tf_efficientnet_b6_ns, tf_efficientnetv2_l,
eca_nfnet_l2), random weights at the config's resolution and batch size:

  train      the package's own `Trainer.train_epoch` (loader workers decoding JPEG crops,
             augmentation, autocast, GradScaler for fp16, channels_last, EMA, AdamW,
             schedule) on synthetic photos made here (`wildid.synth`), once per precision
             (fp16, bf16): images/s after the first (warm-up) epoch, peak GPU memory, and
             the loss of the first and last epochs. An out-of-memory at the config's batch
             is reported and retried at half the batch. Checkpoints are not written (disk,
             not GPU, and they would cost the lease minutes).
  embed      `wildid.infer.embed.embed_views` with flip TTA, as the pipeline's embed stage
             runs it (float32), and the same under bf16 autocast (speed, agreement).
  retrieval  `wildid.infer.retrieval.search(kind="flat")` on a Happywhale-sized gallery
             (bench_retrieval's 51,033 x 4608-d against 27,956 queries, random unit rows,
             float16 as the pipeline stores them), k=5: faiss-gpu if importable, else torch
             on the GPU; checked against a float64 brute force on some of the queries.
  ddp        `torchrun --standalone --nproc_per_node 1 -m wildid.train.ddp` (NCCL on a GPU,
             gloo on a CPU) on the synthetic photos: one epoch of the b6 config.
  headroom   (only with --headroom DATA) benchmarks/sweep_quality.py on a real catalogue with
             benchmarks/sweeps/nyala_gpu.yaml (nyala closed set at 3x and 5x the CPU epochs),
             time-boxed by what is left of the budget.

Every stage has a share of `--budget-s` kept for it (what an earlier stage leaves unused
goes to the next); a stage that would not fit is skipped (saying why), one that fails is
recorded with its error and the next one runs. After each stage the figures so far are
written to `--out` (atomically), so a killed run still leaves them. At the end, the
README's GPU rows are printed (and written beside `--out` as .md); the last line of
stdout is one JSON object with everything.

    python benchmarks/bench_gpu.py [--budget-s 480] [--out FILE] [--headroom DATA]
    python benchmarks/bench_gpu.py --cpu        # CPU-sized mode (auto without CUDA), < 1 min

The CPU-sized mode runs every code path above with tiny stand-ins (timm's test_* models of
the same families, 64 px, 2-step epochs, one loader worker, a small gallery, gloo); `make
test` runs it. It trains in fp32 and bf16, not fp16: CPU autocast keeps `pow` in float16,
where GeM pooling's gradients turn NaN, while CUDA autocast runs `pow` in float32.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from bench_retrieval import DIM, GALLERY, QUERIES

import wildid  # offline switches
from wildid import pipeline
from wildid.config import Config, load_config
from wildid.data.transforms import eval_transform
from wildid.infer.embed import embed_views
from wildid.infer.retrieval import search
from wildid.io import write_text
from wildid.layout import RunLayout
from wildid.models.net import EmbeddingNet
from wildid.synth.render import SynthSpec, synthesize
from wildid.train.engine import TrainData, Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "happywhale"
BACKBONES = ("tf_efficientnet_b6_ns", "tf_efficientnetv2_l", "eca_nfnet_l2")
# The CPU-sized mode's stand-ins: timm's tiny test models of the same families.
CPU_STANDINS = {
    "tf_efficientnet_b6_ns": "test_efficientnet",
    "tf_efficientnetv2_l": "test_efficientnet",
    "eca_nfnet_l2": "test_nfnet",
}
K = 5  # neighbours searched per query (Happywhale's MAP@5)


class Mode(NamedTuple):
    """How big everything is: the GPU lease's sizes, or the CPU-sized smoke run's."""

    name: str
    device: str
    precisions: tuple[str, ...]
    steps_per_epoch: int  # optimizer steps per epoch (the first epoch is the warm-up)
    max_steps: int  # per run, when its share of the budget allows
    individuals: int  # synthetic individuals (about 5 photos each)
    photo_size: int  # longer side of the synthetic photos, px
    embed_images: int  # images embedded per backbone (each also mirrored)
    gallery: int
    queries: int
    dim: int
    reference_queries: int  # queries checked against a float64 brute force
    # overrides of every config: None keeps the config's own value
    backbone: dict[str, str] | None = None
    image_size: int | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    crop_size: int | None = None


GPU_MODE = Mode(
    "gpu", "cuda", ("fp16", "bf16"), steps_per_epoch=25, max_steps=200, individuals=24,
    photo_size=768, embed_images=512, gallery=GALLERY, queries=QUERIES, dim=DIM,
    reference_queries=2048,
)  # fmt: skip
CPU_MODE = Mode(
    "cpu", "cpu", ("fp32", "bf16"), steps_per_epoch=2, max_steps=4, individuals=8,
    photo_size=128, embed_images=16, gallery=2000, queries=300, dim=256,
    reference_queries=300, backbone=CPU_STANDINS, image_size=64, batch_size=4, num_workers=1,
    crop_size=96,
)  # fmt: skip

# The share of the budget kept for each stage (headroom: whatever is left): a stage may use
# what the earlier ones left, but not the later ones' shares, and starts only with at
# least MIN_SHARE of its own.
STAGES = ("data", "train", "embed", "retrieval", "ddp", "headroom")
NEED_PHOTOS = {"train", "embed", "ddp"}
SHARES = {"data": 0.06, "train": 0.56, "embed": 0.1, "retrieval": 0.1, "ddp": 0.18}
MIN_SHARE = 0.25


# ------------------------------------------------------------------------------ plumbing


class Bench:
    """The results so far, the clock, and the partial-results file."""

    def __init__(self, budget_s: float, out: Path | None, environment: dict) -> None:
        self.start, self.budget_s, self.out = time.perf_counter(), budget_s, out
        self.results: dict = {"budget_s": budget_s, "environment": environment, "stages": {}}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        if self.out is not None:
            write_text(self.out, json.dumps(self.results, indent=1) + "\n")

    def skip(self, name: str, reason: str) -> None:
        self.results["stages"][name] = {"status": "skipped", "reason": reason}
        self.save()

    def stage(
        self, name: str, share: float | None, run: Callable[[float], dict], reserved: float = 0.0
    ) -> dict:
        """Run one stage with its deadline (perf_counter seconds); never raises. It may use
        the budget left but the `reserved` fraction (the later stages' shares), and needs
        MIN_SHARE of its own `share` to start."""
        allowed = self.left() - reserved * self.budget_s
        needed = 0.0 if share is None else MIN_SHARE * share * self.budget_s
        if allowed <= 0 or allowed < needed:
            left = f"{self.left():.0f} s of the budget left, {needed:.0f} s needed"
            result = {"status": "skipped", "reason": left}
        else:
            log(f"== {name} (up to {allowed:.0f} s)")
            began = time.perf_counter()
            try:
                result = {"status": "ok", **run(began + allowed)}
            except Exception as err:  # one stage's failure must not stop the others
                result = {"status": "error", "error": one_line(err)}
                traceback.print_exc(file=sys.stderr)
            result["seconds"] = round(time.perf_counter() - began, 1)
        if result["status"] != "ok":
            log(f"== {name}: {result['status']}: {result.get('reason') or result.get('error')}")
        self.results["stages"][name] = result
        self.save()
        return result


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:500]}"


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def is_loader_error(err: BaseException) -> bool:
    """A loader worker died (killed, out of shared memory): worth one try without workers."""
    text = str(err)
    return "DataLoader" in text or "shared memory" in text or "shm" in text


def with_fallback(run: Callable[[int | None], dict]) -> dict:
    """`run(None)` (the config's loader workers), once more with 0 after a loader error."""
    try:
        return run(None)
    except Exception as err:
        if not is_loader_error(err):
            raise
        message = one_line(err)
    log(f"   loader failed ({message[:120]}); once more with train.num_workers=0")
    free_memory()
    return {**run(0), "loader_fallback": message}


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def with_halving(run: Callable[[int], dict], batch: int) -> dict:
    """`run(batch)`, retried at half the batch after each out-of-memory (down to 2)."""
    ooms = []
    while True:
        try:
            return {**run(batch), "oom_at_batch": ooms}
        except Exception as err:
            if not is_oom(err) or batch // 2 < 2:
                raise
            message = one_line(err)
        # out of the except block: the traceback's frames (and their tensors) are gone
        ooms.append(batch)
        log(f"   out of memory at batch {batch} ({message[:120]}); retrying at {batch // 2}")
        free_memory()
        batch //= 2


# ------------------------------------------------------------------------------ stages


def environment(mode: Mode) -> dict:
    def version(name: str) -> str | None:
        try:
            return getattr(importlib.import_module(name), "__version__", "?")
        except Exception:  # not installed, or broken: both are worth knowing
            return None

    faiss = importlib.util.find_spec("faiss") is not None
    env = {
        "mode": mode.name,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "timm": version("timm"),
        "albumentations": version("albumentations"),
        "faiss": version("faiss") if faiss else None,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "shm_free_gib": round(shutil.disk_usage("/dev/shm").free / 2**30, 1)
        if os.path.isdir("/dev/shm")
        else None,
    }
    if faiss:
        module = importlib.import_module("faiss")
        env["faiss_gpus"] = getattr(module, "get_num_gpus", lambda: 0)()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
        try:
            nccl = torch.cuda.nccl.version()
            env["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
        except Exception as err:  # a torch built without NCCL: the ddp stage will say more
            env["nccl"] = one_line(err)
    return env


def overrides_for(backbone: str, mode: Mode, work: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The key=value overrides that put a competition config on the synthetic photos,
    sized for `mode` (`extra` last: they win)."""
    overrides = [
        f"data={work / 'photos'}",
        f"working={work / 'working'}",
        "model.pretrained=none",  # random weights: nothing is downloaded
        "train.folds=1",
        f"train.device={mode.device}",
    ]
    sizes = {
        "model.backbone": (mode.backbone or {}).get(backbone),
        "train.image_size": mode.image_size,
        "train.batch_size": mode.batch_size,
        "train.num_workers": mode.num_workers,
        "crop.size": mode.crop_size,
    }
    overrides += [f"{key}={value}" for key, value in sizes.items() if value is not None]
    return [*overrides, *extra]


def config_for(backbone: str, mode: Mode, work: Path, extra: tuple[str, ...] = ()) -> Config:
    """The backbone's competition config, on the synthetic photos, sized for `mode`."""
    return load_config(CONFIGS / f"{backbone}.yaml", overrides_for(backbone, mode, work, extra))


def make_photos(mode: Mode, work: Path) -> tuple[dict, TrainData, list[str]]:
    """Synthetic photos -> the pipeline's own check, split and crops -> training data."""
    spec = SynthSpec(individuals=mode.individuals, size=mode.photo_size, seed=0)
    summary = synthesize(work / "photos", spec, progress=False)
    config = config_for(BACKBONES[0], mode, work)
    competition, split = pipeline.prepare(config, progress=False)
    crops = pipeline.crop(config, competition, progress=False)
    data = pipeline.train_data(crops, split, config.crop.kinds[0])
    everything = crops.paths("train", config.crop.kinds[0], competition.train["image"])
    figures = {
        "photos": summary.train_images + summary.test_images,
        "train_photos": len(data.train_paths),
        "individuals": len(set(data.train_ids)),
        "photo_size": mode.photo_size,
    }
    return figures, data, everything


def repeated(data: TrainData, images: int) -> TrainData:
    """`data`'s train photos cycled to `images` entries (each draw is augmented anew), no
    validation: an epoch of exactly the steps wanted from a few photos."""
    n = len(data.train_paths)
    take = [i % n for i in range(images)]
    species = data.train_species
    return dataclasses.replace(
        data,
        train_paths=[data.train_paths[i] for i in take],
        train_ids=[data.train_ids[i] for i in take],
        train_species=None if species is None else [species[i] for i in take],
        val_paths=[],
        val_truths=[],
        train_kind_paths=None,
    )


def train_run(
    backbone: str, precision: str, batch: int, mode: Mode, work: Path, photos: TrainData,
    deadline: float, workers: int | None = None,
) -> dict:  # fmt: skip
    """Epochs of `Trainer.train_epoch` until `mode.max_steps` or the deadline."""
    epochs = max(2, mode.max_steps // mode.steps_per_epoch)
    extra = (f"train.precision={precision}", f"train.batch_size={batch}", f"train.epochs={epochs}")
    extra += () if workers is None else (f"train.num_workers={workers}",)
    config = config_for(backbone, mode, work, extra)
    tc = config.train
    data = repeated(photos, batch * tc.accumulate * mode.steps_per_epoch)
    name = f"{backbone}-{precision}-{batch}"
    trainer = Trainer(config, data, work / "runs" / name)
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, seconds = [], []
    images = len(trainer.batches) * tc.batch_size
    for epoch in range(epochs):
        trainer.epoch = epoch
        began = time.perf_counter()
        losses.append(trainer.train_epoch(progress=False))  # ends with .item(): synchronised
        synchronise(device)
        seconds.append(time.perf_counter() - began)
        log(f"   {name} epoch {epoch + 1}: loss {losses[-1]:.3f}, {images / seconds[-1]:.1f} img/s")
        if time.perf_counter() + seconds[-1] > deadline:
            break
    timed = seconds[1:] or seconds  # the first epoch warms up kernels, allocator, workers
    result = {
        "backbone": backbone,
        "ran": config.model.backbone,
        "image_size": tc.image_size,
        "batch": batch,
        "accumulate": tc.accumulate,
        "precision": trainer.precision,
        "channels_last": tc.channels_last,
        "num_workers": tc.num_workers,
        "steps": trainer.step,
        "epochs": len(losses),
        "images_per_s": round(images * len(timed) / sum(timed), 1),
        "warmup_included": len(seconds) == 1,
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "loss_fell": bool(losses[-1] < losses[0]),
        "loss_finite": all(math.isfinite(v) for v in losses),
        "losses": [round(v, 4) for v in losses],
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
    del trainer
    free_memory()
    return result


def measured_run(
    backbone: str, precision: str, mode: Mode, work: Path, photos: TrainData, deadline: float
) -> dict:
    """`train_run` at the config's batch: halved after an out-of-memory, and once without
    loader workers after a loader failure."""
    batch = config_for(backbone, mode, work).train.batch_size
    log(f"-- {backbone} {precision} batch {batch}")

    def with_workers(workers: int | None) -> dict:
        run = functools.partial(
            train_run, backbone, precision, mode=mode, work=work, photos=photos,
            deadline=deadline, workers=workers,
        )  # fmt: skip
        return with_halving(run, batch)

    return with_fallback(with_workers)


def train_stage(mode: Mode, work: Path, photos: TrainData, deadline: float) -> dict:
    """Each backbone x precision in turn, sharing what is left of the stage's time."""
    runs = []
    plan = [(b, p) for b in BACKBONES for p in mode.precisions]
    for i, (backbone, precision) in enumerate(plan):
        share = (deadline - time.perf_counter()) / (len(plan) - i)
        row = {"backbone": backbone, "precision": precision}
        if share <= 0:
            runs.append({**row, "status": "skipped"})
            continue
        try:
            end = time.perf_counter() + share
            runs.append({"status": "ok", **measured_run(*row.values(), mode, work, photos, end)})
        except Exception as err:
            runs.append({**row, "status": "error", "error": one_line(err)})
            traceback.print_exc(file=sys.stderr)
        free_memory()
    return {"runs": runs}


def embed_stage(mode: Mode, work: Path, paths: list[str], deadline: float) -> dict:
    """Flip-TTA embedding of each backbone, float32 (the pipeline's way) then bf16 autocast."""
    runs = []
    images = [paths[i % len(paths)] for i in range(mode.embed_images)]
    for backbone in BACKBONES:
        if time.perf_counter() > deadline:
            runs.append({"backbone": backbone, "status": "skipped"})
            continue
        config = config_for(backbone, mode, work)
        device = torch.device(mode.device)
        net = EmbeddingNet(config.model, pretrained="none").to(device).eval()
        transform = eval_transform(config.train.image_size, net.mean_std)
        batch, workers = config.embed.batch_size, config.train.num_workers
        row = {
            "backbone": backbone,
            "ran": config.model.backbone,
            "batch": batch,
            "image_size": config.train.image_size,
            "images": len(images),
            "flip_tta": True,
        }
        views = {}
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            cast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
            with cast:
                embed_views(net, images[:batch], transform, batch, True, 0, device, progress=False)
                synchronise(device)
                began = time.perf_counter()
                views[label] = embed_views(
                    net, images, transform, batch, True, workers, device, progress=False
                )
                synchronise(device)
            row[f"{label}_images_per_s"] = round(len(images) / (time.perf_counter() - began), 1)
        plain, mirrored = (np.sum(a * b, axis=1) for a, b in zip(*views.values(), strict=True))
        row["bf16_min_cosine_to_fp32"] = round(float(min(plain.min(), mirrored.min())), 5)
        runs.append({"status": "ok", **row})
        del net
        free_memory()
    return {"runs": runs}


def unit_rows(n: int, dim: int, seed: int, device: torch.device) -> np.ndarray:
    """Random unit rows as float16 (how the pipeline stores embeddings), made on `device`."""
    generator = torch.Generator(device=device).manual_seed(seed)
    rows = torch.randn(n, dim, generator=generator, device=device)
    return torch.nn.functional.normalize(rows, dim=1).half().cpu().numpy()


def reference_topk(gallery: np.ndarray, queries: np.ndarray, device: torch.device) -> np.ndarray:
    """Top-k indices by a float64 brute force (the float16 rows as stored)."""
    table = torch.from_numpy(gallery).to(device, torch.float64)
    found = []
    for start in range(0, len(queries), 512):
        block = torch.from_numpy(queries[start : start + 512]).to(device, torch.float64)
        found.append(torch.topk(block @ table.T, K, dim=1).indices.cpu().numpy())
    return np.concatenate(found)


def retrieval_stage(mode: Mode, deadline: float) -> dict:
    device = torch.device(mode.device)
    began = time.perf_counter()
    gallery = unit_rows(mode.gallery, mode.dim, 0, device)
    queries = unit_rows(mode.queries, mode.dim, 1, device)
    made_s = time.perf_counter() - began
    info: dict = {}
    began = time.perf_counter()
    side = "gpu" if device.type == "cuda" else "cpu"
    _, idx = search(gallery, queries, K, kind="flat", info=info, device=side)
    seconds = time.perf_counter() - began
    m = mode.reference_queries
    exact = reference_topk(gallery, queries[:m], device)
    return {
        "gallery": len(gallery),
        "queries": len(queries),
        "dim": mode.dim,
        "k": K,
        "backend": info.get("backend"),
        "search_s": round(seconds, 2),
        "data_s": round(made_s, 1),
        "reference_queries": m,
        "matches_reference": bool((idx[:m] == exact).all()),
        "top1_agreement": float((idx[:m, 0] == exact[:, 0]).mean()),
    }


def child_env() -> dict[str, str]:
    """This process's environment with the imported wildid first on the path."""
    env = dict(os.environ)
    src = str(Path(wildid.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ddp_stage(mode: Mode, work: Path, deadline: float) -> dict:
    """One epoch of the b6 config under torchrun, one process (NCCL on a GPU, gloo else)."""
    backbone = BACKBONES[0]
    extra = ("train.epochs=1", f"working={work / 'ddp'}", "train.val_fraction=0.2")
    overrides = overrides_for(backbone, mode, work, extra)
    config = load_config(CONFIGS / f"{backbone}.yaml", overrides)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "1", "-m", "wildid.train.ddp",
               str(CONFIGS / f"{backbone}.yaml"), *overrides]  # fmt: skip
    began = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=child_env(),
            timeout=max(1.0, deadline - time.perf_counter()),
        )  # fmt: skip
    except subprocess.TimeoutExpired as err:
        raise TimeoutError(f"torchrun ran past the stage's {err.timeout:.0f} s") from None
    seconds = time.perf_counter() - began
    out = RunLayout.of(config).fold(0)
    result = {
        "backend": "nccl" if mode.device == "cuda" else "gloo",
        "backbone": backbone,
        "ran": config.model.backbone,
        "command": " ".join(["torchrun", *command[3:]]),
        "returncode": done.returncode,
        "torchrun_s": round(seconds, 1),
        "completed": done.returncode == 0 and "best checkpoint" in done.stdout,
    }
    history = out / "history.csv"
    if history.is_file():
        import pandas as pd

        row = pd.read_csv(history).iloc[-1]
        result.update(loss=round(float(row["loss"]), 4), images_per_s=float(row["img_per_s"]))
    if done.returncode != 0:
        result["stderr_tail"] = done.stderr[-1500:]
    return result


def headroom_stage(data: Path, work: Path, deadline: float) -> dict:
    """The nyala closed-set sweep at 3x and 5x the CPU epochs, time-boxed."""
    out = work / "headroom"
    minutes = max(0.5, (deadline - time.perf_counter()) / 60)
    workers = min(12, os.cpu_count() or 1)  # as the GPU configs (16 cores)
    command = [sys.executable, str(ROOT / "benchmarks" / "sweep_quality.py"),
               "--variants", str(ROOT / "benchmarks" / "sweeps" / "nyala_gpu.yaml"),
               "--data", str(data), "--out", str(out), "--max-minutes", f"{minutes:.1f}",
               "--no-progress", "--set", f"train.num_workers={workers}"]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=child_env(),
            timeout=max(1.0, deadline - time.perf_counter()), cwd=ROOT,
        )  # fmt: skip
        returncode, tail = done.returncode, done.stderr[-1500:]
    except subprocess.TimeoutExpired:
        returncode, tail = None, "timed out: the variants finished before it are below"
    rows_file = out / "sweep.jsonl"
    rows = rows_file.read_text().splitlines() if rows_file.is_file() else []
    if not rows:
        raise RuntimeError(f"no variant finished (sweep_quality exit {returncode}): {tail}")
    result = {"returncode": returncode, "variants": [json.loads(row) for row in rows]}
    if returncode != 0:
        result["stderr_tail"] = tail
    return result


def summary(results: dict) -> str:
    """benchmarks/README.md's GPU rows (markdown) from the results: what a lease pastes."""
    stages = results["stages"]
    lines = [
        "| backbone | resolution | batch | precision | images/s | peak memory (GiB) | loss fell |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in stages.get("train", {}).get("runs", []):
        if r.get("status") != "ok":
            lines.append(f"| {r['backbone']} | | | {r['precision']} | {r['status']}: "
                         f"{r.get('error', '')[:80]} | | |")  # fmt: skip
            continue
        name = r["backbone"] if r["ran"] == r["backbone"] else f"{r['backbone']} (as {r['ran']})"
        oom = f" (OOM at {r['oom_at_batch']})" if r["oom_at_batch"] else ""
        fell = f"{'yes' if r['loss_fell'] else 'no'} ({r['loss_first']} -> {r['loss_last']})"
        lines.append(
            f"| {name} | {r['image_size']} | {r['batch']} x {r['accumulate']}{oom} | "
            f"{r['precision']} | {r['images_per_s']} | {r.get('peak_memory_gib', '-')} | {fell} |"
        )
    for r in stages.get("embed", {}).get("runs", []):
        if r.get("status") == "ok":
            lines.append(
                f"- embed {r['backbone']} (flip TTA, batch {r['batch']}): float32 "
                f"{r['fp32_images_per_s']} images/s, bf16 autocast {r['bf16_images_per_s']} "
                f"(lowest cosine to float32 {r['bf16_min_cosine_to_fp32']})"
            )
    search, ddp = stages.get("retrieval", {}), stages.get("ddp", {})
    if search.get("status") == "ok":
        lines.append(
            f"- retrieval {search['gallery']:,} x {search['dim']}-d, {search['queries']:,} "
            f"queries, k = {search['k']}: {search['backend']}, {search['search_s']} s; "
            f"top-1 agreement with float64 {search['top1_agreement']} "
            f"({search['reference_queries']} queries)"
        )
    if ddp.get("status") == "ok":
        lines.append(
            f"- ddp ({ddp['backend']}, 1 process): completed {ddp['completed']}, "
            f"{ddp['torchrun_s']} s, loss {ddp.get('loss')}"
        )
    for name, stage in stages.items():
        if stage.get("status") != "ok":
            lines.append(
                f"- {name}: {stage['status']}: {stage.get('reason') or stage.get('error')}"
            )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", help="the CPU-sized mode (auto without CUDA)")
    p.add_argument("--budget-s", type=float, default=None, help="default 480 (GPU), 240 (CPU)")
    p.add_argument("--out", type=Path, default=None, help="JSON file of the figures so far")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp)")
    p.add_argument("--headroom", type=Path, default=None, help="a real catalogue (nyala)")
    p.add_argument("--only", default="", help=f"comma-separated stages of {','.join(STAGES)}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    mode = CPU_MODE if args.cpu or not torch.cuda.is_available() else GPU_MODE
    budget = args.budget_s or (480.0 if mode is GPU_MODE else 240.0)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    only = set(args.only.split(",")) if args.only else set(STAGES)
    if unknown := only - set(STAGES):
        raise SystemExit(f"--only {args.only}: unknown stage(s) {sorted(unknown)}; {STAGES}")
    if only & NEED_PHOTOS:
        only.add("data")
    env = environment(mode)
    log(json.dumps(env))
    bench = Bench(budget, args.out, env)
    photos: dict = {}

    def data(deadline: float) -> dict:
        figures, photos["train"], photos["paths"] = make_photos(mode, work)
        return figures

    stages = {
        "data": data,
        "train": lambda d: train_stage(mode, work, photos["train"], d),
        "embed": lambda d: embed_stage(mode, work, photos["paths"], d),
        "retrieval": lambda d: retrieval_stage(mode, d),
        "ddp": lambda d: ddp_stage(mode, work, d),
        "headroom": lambda d: headroom_stage(args.headroom, work, d),
    }
    for i, (name, run) in enumerate(stages.items()):
        reserved = sum(SHARES.get(later, 0.0) for later in STAGES[i + 1 :] if later in only)
        if name not in only:
            bench.skip(name, "not in --only")
        elif name in NEED_PHOTOS and not photos:
            bench.skip(name, "no photos (the data stage failed)")
        elif name == "headroom" and args.headroom is None:
            bench.skip(name, "no --headroom DATA")
        elif name == "headroom" and not args.headroom.is_dir():
            bench.skip(name, f"{args.headroom}: no catalogue there")
        else:
            bench.stage(name, SHARES.get(name), run, reserved)
    bench.save()
    table = summary(bench.results)
    log(table)
    if args.out is not None:
        write_text(args.out.with_suffix(".md"), table)
    print(json.dumps(bench.results), flush=True)
    return bench.results


if __name__ == "__main__":
    main()
