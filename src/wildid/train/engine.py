"""Training engine: backbone + metric loss, AMP, channels_last, accumulation, EMA, DDP, resume.

Outputs in `out_dir` (written by process 0 only): `last.pt` (everything needed to resume:
weights, loss parameters, EMA, optimizer, schedule, step, history), `best.pt` (weights
with the best validation MAP@5), `history.csv` (one row per epoch), `classes.csv` (class
index -> individual_id). A run killed at any point restarts from `last.pt` and ends with
the weights an uninterrupted run would have: an epoch's batches, augmentations and RNG
streams are functions of (seed, epoch, rank), not of what ran before (see train/data.py).

Under `torchrun` (train/ddp.py) every process trains on its share of each epoch's batches
and DistributedDataParallel averages gradients; `train.batch_size` is per process.
"""

from __future__ import annotations

import errno
import json
import math
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from wildid import faults
from wildid.config import Config
from wildid.data.dataset import loader_options
from wildid.data.pixels import cached_pixels, normalise_batch, pixel_bytes
from wildid.data.transforms import eval_transform
from wildid.errors import RunConflictError, TrainingDivergedError
from wildid.evaluation.metrics import map_at_k
from wildid.infer.embed import embed_paths, embed_pixels
from wildid.infer.exact import cpu_has_native_bf16
from wildid.infer.openset import predict, tune_threshold
from wildid.infer.retrieval import rank_individuals
from wildid.io import atomic_path, write_csv
from wildid.layout import RunLayout, differences, training_settings
from wildid.models.losses import MetricLoss, build_loss
from wildid.models.net import EmbeddingNet
from wildid.train.data import EpochBatches, TrainImages, augmentation

_WRITE_FAILED = "inline_container"  # in every PyTorchStreamWriter write error


def state_bytes(state: object) -> int:
    """The tensor bytes of a (nested) checkpoint state: about what torch.save writes."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


@dataclass(frozen=True)
class TrainData:
    """What the engine trains and validates on: image paths and individual ids."""

    train_paths: list[str]
    train_ids: list[str]
    val_paths: list[str]  # validation queries
    val_truths: list[str]  # individual_id, or new_individual for held-out individuals
    train_species: list[str] | None = None  # for the auxiliary species head
    # Several crop kinds per train image (kind -> paths, same order as train_paths): each
    # sample draws one kind by kind_ratios. None: train on train_paths only.
    train_kind_paths: dict[str, list[str]] | None = None
    kind_ratios: list[float] | None = None


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    best: Path
    last: Path
    history: pd.DataFrame
    classes: list[str]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """train.precision with "auto" decided for `device` (see TrainConfig.precision)."""
    if name != "auto":
        if name == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            print(
                "warning: train.precision=bf16 on a CPU without native bf16 is emulated "
                "(about 9x slower here); train.precision=auto chooses fp32."
            )
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def distributed() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if distributed()[1] > 1:
        dist.barrier()


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def epoch_sizes(start: int | None, size: int, epochs: int) -> list[int]:
    """Progressive resizing (train.image_size_start): each epoch's image size, from `start`
    in the first to `size` in the last in even steps, rounded to multiples of 32 (the
    backbones' stride); `size` throughout when `start` is None."""
    if start is None or epochs < 2 or start >= size:
        return [size] * epochs
    steps = [start + (size - start) * e / (epochs - 1) for e in range(epochs)]
    return [min(size, max(32, 32 * round(s / 32))) for s in steps[:-1]] + [size]


def epochs_within(
    seconds: float, left: float, sizes_of: Callable[[int], list[int]], most: int
) -> int:
    """The most epochs (at least 1, at most `most`) whose epochs after the first fit `left`
    seconds, when the first took `seconds` and an epoch's time grows with its pixels;
    `sizes_of(epochs)` gives each epoch's image size in a run of that many epochs."""
    for epochs in range(most, 1, -1):
        sizes = sizes_of(epochs)
        cost = sum((s / sizes[0]) ** 2 for s in sizes[1:])
        if seconds * cost <= left:
            return epochs
    return 1


class TrainNet(nn.Module):
    """Everything that trains: embedding network, metric loss, optional species head.

    One module, so DistributedDataParallel averages the loss's own parameters (ArcFace
    centres, proxies) along with the network's. Losses run in float32 outside autocast.
    """

    def __init__(
        self,
        net: EmbeddingNet,
        loss: MetricLoss,
        species_head: nn.Module | None,
        species_weight: float,
    ) -> None:
        super().__init__()
        self.net, self.loss, self.species_head = net, loss, species_head
        self.species_weight = species_weight

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, species: torch.Tensor
    ) -> torch.Tensor:
        embeddings = self.net(images)
        with torch.autocast(images.device.type, enabled=False):
            embeddings = embeddings.float()
            loss = self.loss(embeddings, labels)
            if self.species_head is not None:
                species_logits = self.species_head(embeddings)
                loss = loss + self.species_weight * F.cross_entropy(species_logits, species)
        return loss


class Trainer:
    """One training run. Build it, then call `fit()`; it resumes if `last.pt` exists."""

    def __init__(self, config: Config, data: TrainData, out_dir: str | Path) -> None:
        self.config, self.data, self.out_dir = config, data, Path(out_dir)
        tc = config.train
        self.rank, self.world = distributed()
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        seed_everything(tc.seed)
        self.device = resolve_device(tc.device)
        self.precision = resolve_precision(tc.precision, self.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.classes = sorted(set(data.train_ids))
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = [index[i] for i in data.train_ids]
        self.species_names, self.species = self._species(data)
        counts = np.bincount(self.labels, minlength=len(self.classes))
        net = EmbeddingNet(config.model)
        net.freeze(tc.freeze or [])
        dim = config.model.embedding_dim
        loss = build_loss(config.loss, len(self.classes), counts.tolist(), dim)
        species_head = nn.Linear(dim, len(self.species_names)) if self.species_names else None
        self.module = TrainNet(net, loss, species_head, config.loss.species_weight)
        self.module.to(self.device)
        if tc.channels_last:
            self.module.net.to(memory_format=torch.channels_last)
        self.ema = ModelEmaV3(self.module.net, decay=tc.ema_decay) if tc.ema_decay else None
        self.ddp: nn.Module = self.module
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.module, device_ids=ids)
        backbone_ids = {id(p) for p in net.backbone.parameters()}
        backbone = [p for p in net.backbone.parameters() if p.requires_grad]
        rest = [p for p in self.module.parameters() if id(p) not in backbone_ids]
        self.optimizer = torch.optim.AdamW(
            [{"params": backbone, "lr": tc.lr}, {"params": rest, "lr": tc.head_lr}],
            weight_decay=tc.weight_decay,
        )
        if loss.needs_m_per_class and tc.sampler != "m_per_class" and self.rank == 0:
            print(
                f"warning: loss.name={config.loss.name} learns from pairs within a batch; "
                "set train.sampler=m_per_class so every batch has some."
            )
        self.batches = EpochBatches(
            self.labels,
            tc.batch_size,
            tc.sampler,
            tc.m_per_class,
            tc.seed,
            self.rank,
            self.world,
            tc.accumulate,
        )
        if len(self.batches) == 0:
            raise ValueError(
                f"{len(self.labels)} training images make no full batch of "
                f"{tc.batch_size} x {self.world} process(es) x {tc.accumulate} accumulation; "
                "lower train.batch_size or train.accumulate."
            )
        self.steps_per_epoch = len(self.batches) // tc.accumulate
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, self._schedule(tc.epochs)
        )
        self.epochs = tc.epochs  # planned; train.budget_minutes may lower it after epoch 1
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.precision == "fp16" and self.device.type == "cuda"
        )
        self.epoch, self.step = 0, 0
        self.skipped = 0  # this epoch's steps skipped for non-finite gradients
        self.history: list[dict] = []
        self.best_score = -1.0
        self.best_epoch = 0  # the epochs done when best.pt was saved (0: none yet)
        self.mean_std = net.mean_std
        self.eval_tf = eval_transform(tc.image_size, self.mean_std)
        self._loader: DataLoader | None = None

    def _species(self, data: TrainData) -> tuple[list[str], list[int]]:
        if self.config.loss.species_weight <= 0:
            return [], [0] * len(self.labels)
        if data.train_species is None:
            raise ValueError("loss.species_weight > 0 needs the species of the train images.")
        names = sorted(set(data.train_species))
        index = {s: i for i, s in enumerate(names)}
        return names, [index[s] for s in data.train_species]

    # ----------------------------------------------------------------- checkpoints
    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def eval_net(self) -> nn.Module:
        """The weights validated and kept as best: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.module.net

    def _weights(self) -> dict:
        return {
            "model": self.eval_net.state_dict(),
            "loss": self.module.loss.state_dict(),
            "classes": self.classes,
            "species": self.species_names,
            "settings": json.dumps(training_settings(self.config), sort_keys=True),
        }

    def save(self, path: Path, full: bool) -> None:
        if self.rank != 0:
            return
        state = self._weights()
        if full:
            state.update(
                train=self.module.state_dict(),
                ema=self.ema.state_dict() if self.ema is not None else {},
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                epoch=self.epoch,
                step=self.step,
                history=self.history,
                best_score=self.best_score,
                best_epoch=self.best_epoch,
                epochs=self.epochs,
            )
        needed = state_bytes(state)
        try:
            with atomic_path(path, suffix=".pt", size=needed) as tmp:
                torch.save(state, tmp)
        except RuntimeError as err:
            # torch's zip writer reports a full disk as "[enforce fail at
            # inline_container.cc:...] unexpected pos" or "file write failed", no errno.
            free = faults.free_bytes(path)
            if not (_WRITE_FAILED in str(err) or (free is not None and free < needed)):
                raise
            raise faults.storage_error(OSError(errno.ENOSPC, str(err)), path, needed) from None

    def resume(self) -> bool:
        if not self.last_path.is_file():
            return False
        state = torch.load(self.last_path, map_location=self.device, weights_only=True)
        if "train" not in state:
            raise RuntimeError(
                f"{self.last_path}: written by an older wildid, cannot resume; "
                "delete the folder to start over."
            )
        saved = json.loads(state["settings"]) if "settings" in state else None
        diff = differences(saved, training_settings(self.config)) if saved is not None else []
        if diff:
            raise RunConflictError(
                f"{self.last_path} was trained with other settings: {'; '.join(diff)}. Train "
                "into another folder (another run name), or delete this one to start over."
            )
        if list(state["classes"]) != self.classes:
            raise RunConflictError(
                f"{self.last_path}: checkpoint classes differ from this data; train into "
                "another folder (another run name), or delete this one to start over."
            )
        self.module.load_state_dict(state["train"])
        if self.ema is not None:
            if not state["ema"]:
                raise RuntimeError(
                    f"{self.last_path}: saved without EMA but train.ema_decay "
                    "is set; delete the folder or unset it."
                )
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state.get("best_epoch", 0))
        self._plan(int(state.get("epochs", self.config.train.epochs)))
        best = self.best_path.stat().st_mtime_ns if self.best_path.is_file() else -1
        if self.best_epoch == self.epoch > 0 and best < self.last_path.stat().st_mtime_ns:
            # Killed between last.pt and best.pt: last.pt holds this epoch's best weights.
            self.save(self.best_path, full=False)
        return True

    # ----------------------------------------------------------------- loop
    def loader(self, progress: bool = False) -> DataLoader:
        """One loader for the whole run (workers persist); its sampler is set per epoch."""
        if self._loader is not None:
            return self._loader
        tc = self.config.train
        # One path list per crop kind (same images, same order); a sample draws its kind.
        kinds = list((self.data.train_kind_paths or {"": self.data.train_paths}).values())
        cache = None
        if self.fits_cache(len(kinds) * len(kinds[0])):
            cache = [self.pixels(paths, progress) for paths in kinds]
        dataset = TrainImages(
            kinds,
            self.labels,
            self.species,
            augmentation(tc.image_size, letterboxed=cache is not None),
            cache,
            self.data.kind_ratios,
        )
        self._loader = DataLoader(
            dataset,
            batch_sampler=self.batches,
            **loader_options(tc.num_workers),
            persistent_workers=tc.num_workers > 0,
            prefetch_factor=4 if tc.num_workers > 0 else None,
            pin_memory=self.device.type == "cuda",
        )
        return self._loader

    def fits_cache(self, n_images: int) -> bool:
        tc = self.config.train
        return pixel_bytes(n_images, tc.image_size) <= tc.cache_gb * 2**30

    def pixels(self, paths: list[str], progress: bool = False) -> np.ndarray:
        """The letterboxed crops of `paths`, decoded once per working folder."""
        folder = RunLayout.of(self.config).pixels
        tc = self.config.train
        return cached_pixels(paths, tc.image_size, folder, tc.num_workers, progress)

    def _autocast(self) -> torch.autocast:
        precision = self.precision
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=precision != "fp32")

    def _seed_epoch(self) -> None:
        """RNG streams of this epoch (dropout, drop-path, any library's draws) from
        (seed, epoch, rank) alone: what makes a resumed epoch equal an uninterrupted one."""
        seed = int(
            np.random.SeedSequence([self.config.train.seed, self.epoch, self.rank]).generate_state(
                1
            )[0]
        )
        seed_everything(seed)

    def train_epoch(self, progress: bool) -> float:
        tc = self.config.train
        self.ddp.train()
        self._seed_epoch()
        self.batches.set_epoch(self.epoch)
        total = torch.zeros((), device=self.device)
        micro = 0
        size = self.epoch_size
        resize = size != tc.image_size
        bar = tqdm(
            self.loader(progress),
            desc=f"epoch {self.epoch + 1}/{self.epochs}" + (f" ({size} px)" if resize else ""),
            disable=not progress,
            unit="batch",
            leave=False,
        )
        for images, labels, species in bar:
            images = normalise_batch(images.to(self.device, non_blocking=True), self.mean_std)
            if resize:
                images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
                if tc.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
            if not tc.channels_last:
                images = images.contiguous()
            labels = labels.to(self.device, non_blocking=True)
            species = species.to(self.device, non_blocking=True)
            micro += 1
            sync = micro % tc.accumulate == 0
            no_sync = self.world > 1 and not sync
            with self.ddp.no_sync() if no_sync else nullcontext():
                with self._autocast():
                    loss = self.ddp(images, labels, species)
                self.scaler.scale(loss / tc.accumulate).backward()
            total += loss.detach()
            if sync:
                self._optimizer_step()
            if progress and micro % 10 == 0:
                bar.set_postfix(loss=f"{total.item() / micro:.3f}")
        return total.item() / max(micro, 1)

    @property
    def epoch_size(self) -> int:
        """The image size this epoch trains at (train.image_size_start: progressive)."""
        tc = self.config.train
        return epoch_sizes(tc.image_size_start, tc.image_size, self.epochs)[self.epoch]

    def _optimizer_step(self) -> None:
        # fp16's GradScaler skips a step with non-finite gradients itself; in fp32 and bf16
        # the step would write NaN into every weight it reaches, for the rest of the run
        taken = self.scaler.is_enabled() or self._finite_gradients()
        if taken:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.skipped += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        if taken and self.ema is not None:
            self.ema.update(self.module.net, step=self.step)

    def _finite_gradients(self) -> bool:
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))

    def _check_skipped(self) -> None:
        """After an epoch: warn of steps skipped for non-finite gradients; stop when the
        epoch had no finite one (best.pt keeps the best epoch before)."""
        skipped, self.skipped = self.skipped, 0
        if skipped >= self.steps_per_epoch:
            raise TrainingDivergedError(
                f"{self.out_dir}: every step of epoch {self.epoch + 1} had non-finite "
                f"gradients; training stopped (best.pt holds epoch {self.best_epoch}). "
                "Lower train.lr or train.head_lr."
            )
        if skipped and self.rank == 0:
            print(
                f"warning: epoch {self.epoch + 1}: {skipped} of {self.steps_per_epoch} "
                "steps skipped (non-finite gradients)",
                file=sys.stderr,
            )

    def validate(self, progress: bool) -> dict[str, float]:
        if not self.data.val_paths or self.rank != 0:
            return {}
        paths = self.data.train_paths, self.data.val_paths
        with self._autocast():
            gallery, queries = (self._embed(p) for p in paths)
        ranking = rank_individuals(
            gallery, np.array(self.data.train_ids), queries, self.config.retrieval.k
        )
        threshold, _ = tune_threshold(
            ranking, self.data.val_truths, self.config.retrieval.threshold_grid
        )
        return {
            "val_map5": map_at_k(predict(ranking, threshold), self.data.val_truths),
            "val_map5_closed": map_at_k(predict(ranking, None), self.data.val_truths),
            "val_threshold": threshold,
        }

    def _validates(self) -> bool:
        """Whether the epoch being finished is validated: every `train.val_every`-th and
        the last (an epoch without validation never replaces a validated best)."""
        every = self.config.train.val_every
        return (self.epoch + 1) % every == 0 or self.epoch + 1 == self.epochs

    def _schedule(self, epochs: int) -> Callable[[int], float]:
        """The LR multiplier per step of a run of `epochs` epochs."""
        warmup = int(self.steps_per_epoch * self.config.train.warmup_epochs)
        return warmup_cosine(self.steps_per_epoch * epochs, warmup)

    def _plan(self, epochs: int) -> None:
        """Train `epochs` epochs in all: the cosine schedule is stretched to end with them."""
        self.epochs = epochs
        factor = self._schedule(epochs)
        self.scheduler.lr_lambdas = [factor] * len(self.optimizer.param_groups)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * factor(self.scheduler.last_epoch)

    def _fit_budget(self, seconds: float, elapsed: float) -> None:
        """After the first epoch (`seconds`, with its validation; `elapsed` since training
        began, with the one-off decoding of the crops), lower the planned epochs to what
        fits train.budget_minutes at that pace, later epochs' larger images (progressive
        resizing) costing in proportion to their pixels (every process plans alike)."""
        budget = self.config.train.budget_minutes
        if budget is None or self.epoch != 1:
            return
        tc = self.config.train
        planned = epochs_within(
            seconds,
            budget * 60 - elapsed,
            lambda epochs: epoch_sizes(tc.image_size_start, tc.image_size, epochs),
            self.epochs,
        )
        fits = torch.tensor([planned], device=self.device)
        if self.world > 1:
            dist.broadcast(fits, src=0)
        epochs = min(self.epochs, int(fits.item()))
        if epochs < self.epochs and self.rank == 0:
            print(
                f"train.budget_minutes={budget:g}: the first epoch took {seconds:.0f} s "
                f"({elapsed:.0f} s with decoding), so {epochs} of train.epochs={self.epochs} "
                f"epochs fit; training {epochs}."
            )
        self._plan(epochs)

    def _embed(self, paths: list[str]) -> np.ndarray:
        """Validation embeddings: from the decoded crops when they fit the cache (no
        decoding, no workers), else decoded from disk by the loader workers."""
        net, batch, tc = self.eval_net, self.config.embed.batch_size, self.config.train
        if self.fits_cache(len(self.data.train_paths) + len(self.data.val_paths)):
            pixels = self.pixels(paths)
            return embed_pixels(net, pixels, self.mean_std, batch, False, self.device, "", False)[0]
        return embed_paths(
            net, paths, self.eval_tf, batch, False, tc.num_workers, self.device, progress=False
        )

    def fit(self, progress: bool = True) -> TrainResult:
        progress = progress and self.rank == 0
        if self.best_path.is_file() and not self.last_path.is_file():
            raise RunConflictError(
                f"{self.best_path} exists without last.pt (a model copied in?): training "
                f"would overwrite it. To embed with it, set model.checkpoint={self.best_path}; "
                f"to train anew, delete {self.out_dir}."
            )
        resumed = self.resume()
        if resumed and progress:
            print(f"resuming {self.out_dir} from epoch {self.epoch}")
        began = time.perf_counter()
        if self.epoch < self.epochs:
            self.loader(progress)  # decodes the crops once, before the first epoch's clock
        while self.epoch < self.epochs:
            start = time.perf_counter()
            loss = self.train_epoch(progress)
            self._check_skipped()
            seconds = time.perf_counter() - start
            images = len(self.batches) * self.config.train.batch_size * self.world
            row = {
                "epoch": self.epoch + 1,
                "loss": loss,
                "seconds": round(seconds, 1),
                "img_per_s": round(images / max(seconds, 1e-9), 1),
                **({"image_size": self.epoch_size} if self.config.train.image_size_start else {}),
                "lr": self.optimizer.param_groups[0]["lr"],
                **(self.validate(progress) if self._validates() else {}),
            }
            self.epoch += 1
            self.history.append(row)
            now = time.perf_counter()
            self._fit_budget(now - start, now - began)
            score = row.get("val_map5", -loss)
            # last.pt first, then best.pt: a kill between them leaves a last.pt that knows
            # its epoch was the best (best_epoch), and the resume writes best.pt from it.
            # (The other order leaves a best.pt without last.pt, refused as copied in.)
            if score > self.best_score or not self.best_path.is_file():
                self.best_score, self.best_epoch = score, self.epoch
            self.save(self.last_path, full=True)
            if self.best_epoch == self.epoch:
                self.save(self.best_path, full=False)
            if self.rank == 0:
                write_csv(pd.DataFrame(self.history), self.out_dir / "history.csv")
            if progress:
                print(
                    "  "
                    + "  ".join(
                        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in row.items()
                    )
                )
            _barrier()
        if not self.best_path.is_file():  # zero epochs: the pretrained model is the result
            self.save(self.last_path, full=True)
            self.save(self.best_path, full=False)
        if self.rank == 0:
            write_csv(
                pd.DataFrame({"class": range(len(self.classes)), "individual_id": self.classes}),
                self.out_dir / "classes.csv",
            )
        _barrier()
        return TrainResult(
            self.out_dir, self.best_path, self.last_path, pd.DataFrame(self.history), self.classes
        )


def load_trained(config: Config, checkpoint: str | Path, device: torch.device) -> nn.Module:
    """The embedding network with trained weights, for inference."""
    model = EmbeddingNet(config.model, pretrained="none")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return model.to(device).eval()
