"""Training engine: backbone + ArcFace, AMP, channels_last, checkpoints every epoch, resume.

Outputs in `out_dir`: `last.pt` (everything needed to resume: weights, optimizer,
schedule, RNG states, history), `best.pt` (weights with the best validation MAP@5),
`history.csv` (one row per epoch), `classes.csv` (class index -> individual_id).
A run killed at any point restarts from `last.pt`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from wildid.config import Config
from wildid.data.dataset import CropKindDataset, ImageDataset
from wildid.data.transforms import eval_transform, train_transform
from wildid.embed import embed_paths
from wildid.io import atomic_path, write_csv
from wildid.metrics import map_at_k
from wildid.models.heads import ArcFaceHead
from wildid.models.net import EmbeddingNet
from wildid.openset import predict, tune_threshold
from wildid.retrieval import rank_individuals


@dataclass(frozen=True)
class TrainData:
    """What the engine trains and validates on: image paths and individual ids."""

    train_paths: list[str]
    train_ids: list[str]
    val_paths: list[str]  # validation queries
    val_truths: list[str]  # individual_id, or new_individual for held-out individuals
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def warmup_cosine(total_steps: int, warmup_steps: int) -> callable:
    """LR multiplier: linear warmup, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Trainer:
    """One training run. Build it, then call `fit()`; it resumes if `last.pt` exists."""

    def __init__(self, config: Config, data: TrainData, out_dir: str | Path) -> None:
        self.config, self.data, self.out_dir = config, data, Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tc = config.train
        seed_everything(tc.seed)
        self.device = resolve_device(tc.device)
        self.classes = sorted(set(data.train_ids))
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = [index[i] for i in data.train_ids]
        self.model = EmbeddingNet(config.model).to(self.device)
        self.head = ArcFaceHead(
            config.model.embedding_dim, len(self.classes), config.loss.scale,
            config.loss.margin, config.loss.subcenters,
        ).to(self.device)
        if tc.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": self.model.backbone.parameters(), "lr": tc.lr},
                {"params": [*self.model.head_parameters(), *self.head.parameters()],
                 "lr": tc.head_lr},
            ],
            weight_decay=tc.weight_decay,
        )
        self.steps_per_epoch = max(1, len(self.labels) // tc.batch_size)
        total = self.steps_per_epoch * tc.epochs
        warmup = int(self.steps_per_epoch * tc.warmup_epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, warmup)
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=tc.precision == "fp16" and self.device.type == "cuda"
        )
        self.epoch = 0
        self.history: list[dict] = []
        self.best_score = -1.0
        mean_std = self.model.mean_std
        self.train_tf = train_transform(tc.image_size, mean_std)
        self.eval_tf = eval_transform(tc.image_size, mean_std)

    # ----------------------------------------------------------------- checkpoints
    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    def _weights(self) -> dict:
        return {"model": self.model.state_dict(), "head": self.head.state_dict(),
                "classes": self.classes}

    def save(self, path: Path, full: bool) -> None:
        state = self._weights()
        if full:
            state.update(
                optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(), epoch=self.epoch, history=self.history,
                best_score=self.best_score, torch_rng=torch.get_rng_state(),
                numpy_rng=np.random.get_state()[1].tolist(), python_rng=random.getstate()[1],
            )
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(state, tmp)

    def resume(self) -> bool:
        if not self.last_path.is_file():
            return False
        state = torch.load(self.last_path, map_location=self.device, weights_only=True)
        if list(state["classes"]) != self.classes:
            raise RuntimeError(
                f"{self.last_path}: checkpoint classes differ from this data; "
                "delete the folder to start over."
            )
        self.model.load_state_dict(state["model"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history = int(state["epoch"]), list(state["history"])
        self.best_score = float(state["best_score"])
        torch.set_rng_state(state["torch_rng"].cpu())
        np.random.set_state(("MT19937", np.array(state["numpy_rng"], dtype=np.uint32), 624, 0, 0.0))
        random.setstate((3, tuple(state["python_rng"]), None))
        return True

    # ----------------------------------------------------------------- loop
    def _loader(self) -> DataLoader:
        tc = self.config.train
        generator = torch.Generator().manual_seed(tc.seed * 1000 + self.epoch)
        dataset = (
            ImageDataset(self.data.train_paths, self.labels, self.train_tf)
            if self.data.train_kind_paths is None
            else CropKindDataset(self.data.train_kind_paths, self.data.kind_ratios, self.labels,
                                 self.train_tf)
        )
        return DataLoader(
            dataset,
            batch_size=tc.batch_size, shuffle=True, drop_last=True, generator=generator,
            num_workers=tc.num_workers, worker_init_fn=_seed_worker,
            persistent_workers=False, pin_memory=self.device.type == "cuda",
        )

    def _autocast(self) -> torch.autocast:
        precision = self.config.train.precision
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=precision != "fp32")

    def train_epoch(self, progress: bool) -> float:
        self.model.train()
        self.head.train()
        losses = []
        bar = tqdm(self._loader(), desc=f"epoch {self.epoch + 1}/{self.config.train.epochs}",
                   disable=not progress, unit="batch", leave=False)
        for images, labels in bar:
            images = images.to(self.device, non_blocking=True)
            if self.config.train.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(self.device)
            with self._autocast():
                logits = self.head(self.model(images), labels)
            loss = F.cross_entropy(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        return float(np.mean(losses)) if losses else float("nan")

    def validate(self, progress: bool) -> dict[str, float]:
        if not self.data.val_paths:
            return {}
        kwargs = {"batch_size": self.config.embed.batch_size, "flip_tta": False,
                  "num_workers": self.config.train.num_workers, "device": self.device,
                  "progress": False}
        with self._autocast():
            gallery = embed_paths(self.model, self.data.train_paths, self.eval_tf, **kwargs)
            queries = embed_paths(self.model, self.data.val_paths, self.eval_tf, **kwargs)
        ranking = rank_individuals(gallery, np.array(self.data.train_ids), queries,
                                   self.config.retrieval.k)
        threshold, _ = tune_threshold(ranking, self.data.val_truths,
                                      self.config.retrieval.threshold_grid)
        return {
            "val_map5": map_at_k(predict(ranking, threshold), self.data.val_truths),
            "val_map5_closed": map_at_k(predict(ranking, None), self.data.val_truths),
            "val_threshold": threshold,
        }

    def fit(self, progress: bool = True) -> TrainResult:
        resumed = self.resume()
        if resumed and progress:
            print(f"resuming {self.out_dir} from epoch {self.epoch}")
        while self.epoch < self.config.train.epochs:
            start = time.perf_counter()
            loss = self.train_epoch(progress)
            seconds = time.perf_counter() - start
            row = {"epoch": self.epoch + 1, "loss": loss, "seconds": round(seconds, 1),
                   "img_per_s": round(self.steps_per_epoch * self.config.train.batch_size
                                      / max(seconds, 1e-9), 1),
                   **self.validate(progress)}
            self.epoch += 1
            self.history.append(row)
            score = row.get("val_map5", -loss)
            if score > self.best_score or not self.best_path.is_file():
                self.best_score = score
                self.save(self.best_path, full=False)
            self.save(self.last_path, full=True)
            write_csv(pd.DataFrame(self.history), self.out_dir / "history.csv")
            if progress:
                print("  " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in row.items()))
        if not self.best_path.is_file():  # zero epochs: the pretrained model is the result
            self.save(self.best_path, full=False)
            self.save(self.last_path, full=True)
        write_csv(pd.DataFrame({"class": range(len(self.classes)), "individual_id": self.classes}),
                  self.out_dir / "classes.csv")
        return TrainResult(self.out_dir, self.best_path, self.last_path,
                           pd.DataFrame(self.history), self.classes)


def load_trained(config: Config, checkpoint: str | Path, device: torch.device) -> nn.Module:
    """The embedding network with trained weights, for inference."""
    model = EmbeddingNet(config.model, pretrained="none")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return model.to(device).eval()
