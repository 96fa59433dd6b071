"""Training throughput: our full training step against a bare loop of the same model.

Ours: `Trainer.train_epoch` on the mini-competition, i.e. JPEG crops from disk (decoded
and letterboxed once into the RAM cache, timed separately), per-image augmentation in
the loader, model, loss, optimizer, schedule. Bare: the same network, loss and optimizer
stepping on one batch of random tensors already in memory. Same backbone, batch, image
size, precision and threads; the two alternate, so a noisy neighbour hits both.

    python benchmarks/bench_train.py [--data DIR] [--reps N] [key=value ...]

Ends with one JSON line: ratio (ours / bare img/s, median over reps), ours_img_s,
bare_img_s, and the settings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import wildid  # noqa: F401  (offline switches)
from wildid import pipeline
from wildid.config import load_config
from wildid.synth.render import SynthSpec, synthesize
from wildid.train.engine import Trainer

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = ["model.backbone=mobilenetv2_100", "train.batch_size=32", "train.image_size=128"]


def bare_loop(trainer: Trainer, steps: int) -> float:
    """Seconds for `steps` forward+backward+optimizer steps on an in-memory batch."""
    tc = trainer.config.train
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(tc.batch_size, 3, tc.image_size, tc.image_size, generator=generator)
    labels = torch.randint(0, len(trainer.classes), (tc.batch_size,), generator=generator)
    species = torch.zeros(tc.batch_size, dtype=torch.long)
    images, labels = images.to(trainer.device), labels.to(trainer.device)
    species = species.to(trainer.device)
    if tc.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    trainer.ddp.train()
    start = time.perf_counter()
    for _ in range(steps):
        with trainer._autocast():
            loss = trainer.ddp(images, labels, species)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    loss.item()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "input" / "mini-whales")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    if not (args.data / "train.csv").is_file():
        print(f"{args.data}: no competition there; making the synthetic one", file=sys.stderr)
        args.data = workdir / "mini"
        synthesize(args.data, SynthSpec(seed=0), progress=False)
    config = load_config(
        ROOT / "configs" / "mini.yaml",
        [f"data={args.data}", f"working={workdir}", *DEFAULTS, *args.overrides],
    )
    competition, split = pipeline.prepare(config)
    crops = pipeline.crop(config, competition, progress=False)
    data = pipeline.train_data(crops, split, config.crop.kinds[0])
    ours = Trainer(config, data, workdir / "ours")
    bare = Trainer(config, data, workdir / "bare")
    tc = config.train
    start = time.perf_counter()
    ours.loader()  # builds the RAM cache (decoding every crop once) and the loader
    cache_s = time.perf_counter() - start
    steps = len(ours.batches)
    images = steps * tc.batch_size
    ours.train_epoch(progress=False)  # warm-up: kernels, allocator, loader workers
    bare_loop(bare, min(steps, 5))
    ours_s, bare_s = [], []
    for rep in range(args.reps):
        bare_s.append(bare_loop(bare, steps))
        start = time.perf_counter()
        ours.epoch += 1
        ours.train_epoch(progress=False)
        ours_s.append(time.perf_counter() - start)
        print(
            f"rep {rep}: ours {images / ours_s[-1]:.1f} img/s, "
            f"bare {images / bare_s[-1]:.1f} img/s",
            file=sys.stderr,
        )
    ours_img_s = images / statistics.median(ours_s)
    bare_img_s = images / statistics.median(bare_s)
    print(
        json.dumps(
            {
                "ratio": round(ours_img_s / bare_img_s, 3),
                "ours_img_s": round(ours_img_s, 1),
                "bare_img_s": round(bare_img_s, 1),
                "ratio_per_rep": [round(b / o, 3) for o, b in zip(ours_s, bare_s, strict=True)],
                "cache_s": round(cache_s, 1),
                # an epoch that also decodes every crop (the first epoch of a run)
                "ratio_with_cache": round(
                    images / (statistics.median(ours_s) + cache_s) / bare_img_s, 3
                ),
                "images_per_epoch": images,
                "backbone": config.model.backbone,
                "batch_size": tc.batch_size,
                "image_size": tc.image_size,
                "precision": ours.precision,
                "num_workers": tc.num_workers,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
