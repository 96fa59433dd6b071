"""Embedding throughput: our embed stage against a bare forward loop of the same model.

Ours: `pipeline.embed` on the mini-competition's train and test crops, i.e. the crops'
letterboxed pixels (decoded once per working folder by `wildid.data.pixels`: the first
call, reported as `ratio_first`; later calls read them back), normalising, the model,
flip TTA (`embed.flip_tta`), L2 normalisation and combining, no embedding cache
(`out_dir=None`). Bare: the same network on one
batch of random tensors already in memory, as many forward passes (the mirror included
when flip TTA is on). Same backbone, batch, image size and threads; the two alternate, so
a noisy neighbour hits both.

    python benchmarks/bench_embed.py [--data DIR] [--reps N] [key=value ...]

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
from wildid.infer.embed import flip_mode
from wildid.models.net import EmbeddingNet
from wildid.synth.render import SynthSpec, synthesize
from wildid.train.engine import resolve_device


def bare_loop(model: torch.nn.Module, images: int, batch: int, size: int, flip: bool) -> float:
    """Seconds for the forward passes `images` images need, on an in-memory batch."""
    generator = torch.Generator().manual_seed(0)
    # the layout ours feeds the model: a channels_last view of an NHWC batch (normalise_batch)
    tensor = torch.randn(batch, size, size, 3, generator=generator).permute(0, 3, 1, 2)
    passes = -(-images // batch) * (2 if flip else 1)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(passes):
            model(tensor)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("input/mini-whales"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    if not (args.data / "train.csv").is_file():
        print(f"{args.data}: no competition there; making the synthetic one", file=sys.stderr)
        args.data = workdir / "mini"
        synthesize(args.data, SynthSpec(seed=0), progress=False)
    config = load_config("mini", [f"data={args.data}", f"working={workdir}", *args.overrides])
    competition, _ = pipeline.prepare(config)
    crops = pipeline.crop(config, competition, progress=False)
    device = resolve_device(config.train.device)
    model = EmbeddingNet(config.model).to(device).eval()
    ec, size = config.embed, config.train.image_size
    flip = flip_mode(ec.flip_tta) != "none"
    images = (len(competition.train) + len(competition.test)) * len(config.crop.kinds)
    start = time.perf_counter()  # the first embed decodes the crops (wildid.data.pixels)
    pipeline.embed(config, competition, crops, model, progress=False)
    cold_s = time.perf_counter() - start
    ours_s, bare_s = [], []
    for rep in range(args.reps):
        bare_s.append(bare_loop(model, images, ec.batch_size, size, flip))
        start = time.perf_counter()
        pipeline.embed(config, competition, crops, model, progress=False)
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
                # the first embed of a working folder, which decodes every crop once
                "ratio_first": round(images / cold_s / bare_img_s, 3),
                "images": images,
                "backbone": config.model.backbone,
                "batch_size": ec.batch_size,
                "image_size": size,
                "flip_tta": ec.flip_tta,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
