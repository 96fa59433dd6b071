"""All stages in order: data -> [detect] -> crop -> train -> embed -> evaluate -> submit
-> report.

Each stage is a function taking the previous stage's output; `run` chains them for
`wildid run` and the notebooks call them one at a time. Where outputs land is decided by
`wildid.layout.RunLayout` alone. `prepare` binds the run's name to its training settings
first (a changed setting under an old name is refused before anything is written).
Every stage skips or resumes work that is already done.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from wildid import cache
from wildid.config import Config, save_config
from wildid.crop.boxes import CropSet, make_crops
from wildid.crop.detector.train import Detector
from wildid.data.check import apply_policy, check_competition
from wildid.data.competition import Competition, load_competition
from wildid.data.folds import fold_split, make_folds, read_folds
from wildid.data.pixels import cached_pixels, pixel_bytes
from wildid.data.transforms import eval_transform
from wildid.infer.embed import (
    Embeddings,
    combine_views,
    embed_kind,
    embed_pixels,
    embed_views,
    flip_mode,
    weights_digest,
    write_embeddings,
)
from wildid.io import write_csv
from wildid.layout import RunLayout
from wildid.models.net import EmbeddingNet
from wildid.pipeline.evaluate import Evaluation, evaluate, evaluate_folds, evaluate_rankings
from wildid.train.checkpoints import trained_checkpoints
from wildid.train.engine import TrainData, Trainer, distributed, load_trained, resolve_device


def check(config: Config, competition: Competition, progress: bool = True) -> Competition:
    """Check every photo (`wildid check`, cached per photo under working/check/) and apply
    `check.on_bad`: stop on a bad photo, or leave bad train photos out of this run."""
    cc = config.check
    report = check_competition(competition, config.working, cc.max_pixels, cc.workers, progress)
    if progress and not report.problems.empty:
        print(report.summary(), file=sys.stderr)
    return apply_policy(competition, report, cc.on_bad, progress)


def prepare(config: Config, progress: bool = True) -> tuple[Competition, pd.DataFrame]:
    """Load and validate the competition, check its photos; split train for validation.

    The photo check comes first, so a bad photo stops the run before anything is written
    in the run folder. Writes folds.csv (every fold's roles, `train.folds` of them) and
    split.csv (fold 0, the split returned); with one fold, the split holds out
    `train.val_fraction`.
    """
    competition = check(config, load_competition(config.data), progress)
    layout = RunLayout.of(config)
    layout.claim(config)
    tc = config.train
    folds = make_folds(competition.train, tc.folds, tc.val_new_fraction, tc.seed, tc.val_fraction)
    write_csv(folds, layout.folds)
    split = fold_split(folds, 0)
    write_csv(split, layout.split)
    save_config(config, layout.config)
    return competition, split


def detect(config: Config, competition: Competition, progress: bool = True) -> Detector:
    """Train the fullbody/backfin detector on boxes.csv (skipped when up to date)."""
    from wildid.crop.detector import train as train_detector  # imports ultralytics: only when used

    return train_detector(config, competition, progress)


def crop(
    config: Config,
    competition: Competition,
    progress: bool = True,
    detector: Detector | None = None,
) -> CropSet:
    """Crop every photo per kind from boxes.csv, the detector's boxes, or none (whole)."""
    if config.crop.source == "detector":
        from wildid.crop.detector import crop as detector_crop

        return detector_crop(config, competition, detector, progress)
    return make_crops(
        competition,
        config.crop,
        config.working,
        progress=progress,
        max_pixels=config.check.max_pixels,
    )


def train_data(
    crops: CropSet,
    split: pd.DataFrame,
    kind: str,
    kinds: Sequence[str] = (),
    ratios: Sequence[float] | None = None,
) -> TrainData:
    """Paths and ids to train on; with several `kinds`, each sample draws one by `ratios`."""
    fit, val = split[split["role"] == "train"], split[split["role"] == "val"]
    kind_paths = (
        {k: crops.paths("train", k, fit["image"]) for k in kinds} if len(kinds) > 1 else None
    )
    return TrainData(
        train_paths=crops.paths("train", kind, fit["image"]),
        train_ids=fit["individual_id"].tolist(),
        val_paths=crops.paths("train", kind, val["image"]),
        val_truths=val["val_truth"].tolist(),
        train_species=fit["species"].tolist() if "species" in fit else None,
        train_kind_paths=kind_paths,
        kind_ratios=None if ratios is None else list(ratios),
    )


def fold_ids(config: Config) -> list[int]:
    """The folds `train` trains: `train.fold_ids`, or all `train.folds` of them."""
    ids = config.train.fold_ids
    if ids is None:
        return list(range(config.train.folds))
    bad = [k for k in ids if not 0 <= k < config.train.folds]
    if bad:
        raise ValueError(
            f"train.fold_ids {bad} outside 0..{config.train.folds - 1} "
            f"(train.folds={config.train.folds})."
        )
    return list(ids)


def train(config: Config, crops: CropSet, split: pd.DataFrame, progress: bool = True) -> list[Path]:
    """Train each configured fold into models/fold<k>/; returns their best checkpoints.

    Fold 0 trains on `split`; other folds on their rows of folds.csv (written by
    `prepare`). Each fold resumes a killed run from its last.pt. With `model.checkpoint`
    nothing trains: the finished models it names are checked and returned.
    """
    if config.model.checkpoint:
        found = trained_checkpoints(config, fold_ids(config))
        if progress:
            print(f"model.checkpoint: using {', '.join(map(str, found.values()))}; not training")
        return list(found.values())
    layout = RunLayout.of(config)
    folds = None
    best = []
    for k in fold_ids(config):
        if k == 0:
            fold = split
        else:
            folds = read_folds(layout.folds) if folds is None else folds
            fold = fold_split(folds, k)
        cc = config.crop
        data = train_data(crops, fold, cc.kinds[0], cc.kinds, cc.ratios)
        out_dir = layout.fold(k)
        if distributed()[0] == 0 and not (out_dir / "last.pt").is_file():
            save_config(config, out_dir / "config.yaml")  # what trains this model, kept
        best.append(Trainer(config, data, out_dir).fit(progress).best)
    return best


def embed(
    config: Config,
    competition: Competition,
    crops: CropSet,
    forward: torch.nn.Module,
    out_dir: Path | None = None,
    progress: bool = True,
) -> Embeddings:
    """Embed every train and test image for each crop kind; combine kinds as configured.

    `forward` maps a batch of images to embeddings and has a `mean_std` attribute (the
    normalisation its weights expect). With `out_dir`, each kind's views are stored there
    (see wildid.infer.embed) and reused while the weights, config and crops are unchanged.
    """
    size = config.embed_size
    transform = eval_transform(size, forward.mean_std)
    ec = config.embed
    device = resolve_device(config.train.device)
    mode = flip_mode(ec.flip_tta)

    tc = config.train
    pixels_dir = RunLayout.of(config).pixels

    def embedder(paths: list[str], desc: str) -> tuple[np.ndarray, np.ndarray | None]:
        if pixel_bytes(len(paths), size) <= tc.cache_gb * 2**30:
            pixels = cached_pixels(paths, size, pixels_dir, tc.num_workers, progress)
            flip = mode != "none"
            return embed_pixels(
                forward, pixels, forward.mean_std, ec.batch_size, flip, device, desc, progress
            )
        return embed_views(
            forward,
            paths,
            transform,
            ec.batch_size,
            mode != "none",
            config.train.num_workers,
            device,
            desc,
            progress,
        )

    tables = {"train": competition.train, "test": competition.test}
    digest = weights_digest(forward) if isinstance(forward, torch.nn.Module) else None
    views = {}
    for kind in config.crop.kinds:
        paths = {s: crops.paths(s, kind, t["image"]) for s, t in tables.items()}
        if out_dir is None or digest is None:
            views[kind] = {
                name: array
                for s in tables
                for name, array in zip(
                    (s, f"{s}_flip"), embedder(paths[s], f"embed {s}/{kind}"), strict=True
                )
                if array is not None
            }
            continue
        key = cache.fingerprint(
            digest,
            config.section_dict("crop", "model"),
            size,
            mode != "none",
            ec.dtype,
            paths,
            _crops_digest(crops, kind),
        )
        views[kind] = embed_kind(Path(out_dir) / kind, key, paths, embedder, ec.dtype)
    result = combine_views(views, mode, config.crop.combine)
    if out_dir is not None:
        write_embeddings(
            out_dir, result, competition.train["image"], competition.test["image"], ec.dtype
        )
    return result


def _crops_digest(crops: CropSet, kind: str) -> str:
    """What a kind's crops were cut from (photo stamps, boxes): crops re-made in place under
    the same paths (a replaced photo, a changed box) must not reuse old embeddings."""
    table = crops.table[crops.table["kind"] == kind]
    return str(int(pd.util.hash_pandas_object(table, index=False).sum()))


@dataclass(frozen=True)
class RunResult:
    trained: Evaluation
    baseline: Evaluation | None
    seconds: dict[str, float]
    report: Path | None = None  # report/index.html; None when it could not be written
    fused: Evaluation | None = None  # with fusion.local: trained + local, calibrated


def report(config: Config, progress: bool = True) -> Path | None:
    """Write the run's report (wildid.report); its index.html, or None when that failed.

    The run's results are on disk before the report is made, so a report that cannot be
    written (a bug, a full disk, a missing optional package) must not end the run: it
    prints a warning saying why and how to retry, with the traceback, and returns None.
    """
    from wildid.report import write_report

    layout = RunLayout.of(config)
    try:
        return write_report(layout, progress=progress).index
    except Exception as err:  # any failure: reported below, the run's results stand
        print(
            f"warning: the report of {layout.root} was not written ({type(err).__name__}: "
            f"{err}); the results are in {layout.metrics()} and {layout.submission()}. "
            f"Retry with: wildid report {layout.root}",
            file=sys.stderr,
        )
        traceback.print_exc(file=sys.stderr)
        return None


def run(config: Config, progress: bool = True) -> RunResult:
    """Every stage in order; see the module docstring for where outputs land."""
    timer = _Timer()
    with timer("prepare"):  # the photo check first (wildid.data.check), then the split
        competition, split = prepare(config, progress)
    detector = None
    if config.crop.source == "detector":
        with timer("detect"):
            detector = detect(config, competition, progress)
    with timer("crop"):
        crops = crop(config, competition, progress, detector)
    with timer("train"):
        bests = train(config, crops, split, progress)
    device = resolve_device(config.train.device)
    layout = RunLayout.of(config)
    with timer("embed"):
        per_fold = {
            k: embed(
                config,
                competition,
                crops,
                load_trained(config, best, device),
                layout.embeddings(k),
                progress,
            )
            for k, best in zip(fold_ids(config), bests, strict=True)
        }
    with timer("evaluate"):
        if len(per_fold) == 1:
            trained = evaluate(
                "trained", config, competition, split, *per_fold.values(), pseudo_labels=True
            )
        else:
            trained = evaluate_folds("trained", config, competition, per_fold, pseudo_labels=True)
    fused = None
    if config.fusion.local:
        with timer("fuse"):
            fused = evaluate_fused(config, competition, split, per_fold, crops, progress)
    baseline = None
    if config.baseline:
        with timer("baseline"):
            baseline = run_baseline(config, competition, split, crops, device, progress)
    with timer("report"):
        index = report(config, progress)
    return RunResult(trained, baseline, timer.seconds, index, fused)


def evaluate_fused(
    config: Config,
    competition: Competition,
    split: pd.DataFrame,
    per_fold: dict[int, Embeddings],
    crops: CropSet,
    progress: bool = True,
) -> Evaluation:
    """The `fused` method (`wildid.pipeline.fusion`): fold 0's embedding and local
    keypoint matching, calibrated on fold 0's validation pairs."""
    from wildid.pipeline.fusion import fused_rankings

    embeddings = per_fold[min(per_fold)]
    val, truths, test, threshold, extra = fused_rankings(
        config, competition, split, embeddings, crops, progress
    )
    layout = RunLayout.of(config)
    return evaluate_rankings(
        "fused",
        config,
        competition,
        val,
        truths,
        test,
        layout.method("fused"),
        layout.submission("fused"),
        threshold=threshold,
        extra=extra,
    )


class _PooledFeatures(torch.nn.Module):
    """Pretrained backbone + GeM, no training: the baseline every method must beat."""

    def __init__(self, net: EmbeddingNet) -> None:
        super().__init__()
        self.net = net
        self.mean_std = net.mean_std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.pooled(images)


def run_baseline(
    config: Config,
    competition: Competition,
    split: pd.DataFrame,
    crops: CropSet,
    device: torch.device,
    progress: bool = True,
) -> Evaluation:
    net = EmbeddingNet(config.model).to(device).eval()
    embeddings = embed(config, competition, crops, _PooledFeatures(net), progress=progress)
    return evaluate("baseline", config, competition, split, embeddings, centres=None)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> _Timer:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._name] = round(time.perf_counter() - self._start, 1)
