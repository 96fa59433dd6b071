"""Multi-process training with DistributedDataParallel, launched by torchrun.

    torchrun --standalone --nproc_per_node N -m wildid.train.ddp CONFIG [key=value ...]
    wildid train CONFIG --nproc N [key=value ...]        (the same, spawned for you)

Every process runs the cached stages before training (process 0 first, so the crops are
made once), then trains its share of each batch: NCCL on GPUs (one per process), gloo on
CPUs. Only process 0 writes checkpoints and history; all of them resume from last.pt.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

import wildid  # noqa: F401  (offline switches)
from wildid import pipeline
from wildid.config import load_config
from wildid.train.engine import resolve_device


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wildid.train.ddp", description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error("run me under torchrun (or `wildid train CONFIG --nproc N`).")
    config = load_config(args.config, args.overrides)
    device = resolve_device(config.train.device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    elif config.train.threads is None:  # share the cores, don't oversubscribe them
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    try:
        rank = dist.get_rank()
        if rank != 0:
            dist.barrier()  # process 0 prepares and crops first; the others reuse its cache
        competition, split = pipeline.prepare(config)
        crops = pipeline.crop(config, competition, progress=rank == 0)
        if rank == 0:
            dist.barrier()
        best = pipeline.train(config, crops, split, progress=rank == 0)
        if rank == 0:
            for path in best:
                print(f"best checkpoint: {path}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
