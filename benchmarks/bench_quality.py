"""Quality benchmark on a real folder-per-individual catalogue (default: wild nyala).

    make bench-quality [DATA=../shared/datasets/nyala] [GROUP='^(\\d+)_']

Imports the catalogue twice with `import_catalogue` (split by sighting group, seed 0):
a closed-set protocol (about 20% of each multi-sighting individual's sightings are
queries) and an open-set one (about 20% of individuals also held out whole as new), and
scores side by side on the same splits, each method one `CalibratedFusion` of its
matchers over its own shortlist (`wildid.matching.fusion`):

* imagenet_<backbone>: shipped ImageNet features (GeM pooled), no training;
* local: RootSIFT keypoints on the animal (GrabCut foreground of the box), HotSpotter's
  one-vs-many LNBNN weights of the RANSAC-kept matches over the whole shortlist
  (`--local-score inliers`: each pair's ratio-test RANSAC inliers instead;
  `--local-normalise query`: scores over the query's shortlist median), over the top
  `--shortlist`
  gallery photos of the untrained MobileNetV2 (training-free end to end);
* trained: the package's pipeline (configs/nyala.yaml) trained on the gallery only; in
  the open protocol, without the calibration photos (below);
* trained+local: WildFusion: the trained cosine and the local score, each calibrated
  into P(same individual) by isotonic regression on held-out gallery pairs, averaged,
  over the trained model's top `--shortlist`.

Every method sees the animal box from `wildid.crop.saliency` (class activation map of the
shipped ImageNet classifier) and compares only same-flank photos when the file names say
the flank (`--side-regex`, nyala: `_leftphoto` / `_rightphoto`). Calibration data come
from the gallery alone: `--calibration` gallery photos are matched leave-one-sighting-out
against the rest of the gallery, those of individuals with no other sighting playing
`new_individual`, topped up to `--calibration-new` new individuals by holding further
individuals out whole (so a catalogue without sighting ids, `--group ''`, still has new
ones). Their shortlisted pairs fit each matcher's calibration; their fused rankings set
the open-set thresholds on P(same): the MAP@5-optimal one (pseudo-queries weighted to the
share of new queries the protocol's design implies, `--new-share`) and the
gmean(BAKS, BAUS)-optimal one (balanced accuracies: no weighting), both reported. No
query label is used by either. The open protocol's trained model does not train on any
calibration photo (they stay in the gallery, embedded), so its calibration is fitted on
similarities it was not fitted to. The closed protocol trains on its whole gallery and
takes its calibrations from the open run, fitted there on the calibration rows that are
not closed queries; run alone (`--protocols closed`), it calibrates on its own
trained-on, inflated rows.

With `--level both` (default) every method is also scored per sighting: the photos of a
query sighting (its left and right flank) vote together, and calibration pseudo-queries
are pooled the same way (`wildid.matching.sightings`). `--flank-variants` adds the
trained model with flip TTA (mirror averaged) and with every flank compared with every
flank, to measure what flank awareness is worth.

Everything slow is cached under OUT and skipped by a re-run: CAM boxes, crops, the
ImageNet features, SIFT features (per image and settings), pair inlier counts (per
matcher settings), trained models and their embeddings (per training settings and
left-out photos). A re-run with other fusion, calibration or open-set settings costs the
matching of pairs not seen before and seconds of calibration.

Writes OUT/results.md, results.json (OUT/results-TAG.* with `--tag`) and
matches_<protocol>.png (sampled queries with the trained model's top matches); the last
line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

import wildid  # noqa: F401  (offline switches)
from wildid import pipeline
from wildid.cache import file_identity, fingerprint
from wildid.config import Config, FusionConfig, ModelConfig, load_config
from wildid.crop.boxes import crop_image, expand_box
from wildid.crop.saliency import CamConfig, cam_boxes
from wildid.data.competition import NEW_INDIVIDUAL, Competition
from wildid.data.dataset import read_rgb
from wildid.data.transforms import eval_transform
from wildid.evaluation.plots import match_gallery
from wildid.evaluation.protocols import (
    Calibration,
    Protocol,
    calibration,
    closed_scores,
    cosine,
    expected_new_share,
    flank_classes,
    import_protocols,
    open_scores,
    query_scores,
    rank,
    share_weights,
    side_mask,
    training_exclusion,
    trains_on_calibration,
)
from wildid.infer.embed import embed_paths
from wildid.infer.openset import OperatingPoints, choose_operating_points, threshold_grid
from wildid.infer.retrieval import Ranking
from wildid.io import atomic_path, write_csv, write_text
from wildid.layout import RunLayout
from wildid.matching.base import (
    POOLS,
    CentredMatcher,
    CosineMatcher,
    Matcher,
    PooledMatcher,
    Shortlist,
)
from wildid.matching.fusion import (
    WEIGHT_GRID,
    CalibratedFusion,
    FusedScores,
    LocalMatcher,
    PairCache,
    choose_weights,
    rank_shortlist,
    same_pairs,
)
from wildid.matching.local import MASKS, MODELS, SCORES, LocalConfig, extract_paths
from wildid.matching.sightings import (
    one_individual_per_sighting,
    pool_by_sighting,
    pool_calibration,
)
from wildid.models.net import EmbeddingNet
from wildid.train.engine import load_trained, resolve_device

BASELINES = ("mobilenetv2_100", "efficientnet_lite0")
LEVELS = ("photo", "sighting", "both")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--group", default=DEFAULT_GROUP, help="sighting regex; '' = photo per group")
    p.add_argument(
        "--side-regex",
        default=r"_(left|right)",
        help="flank in the file name; '' = compare every pair",
    )
    p.add_argument(
        "--out",
        default=None,
        help="working folder (default: working/bench/quality for nyala with its sighting "
        "regex, working/bench/quality-<catalogue>[-nogroup] for any other catalogue or regex: "
        "one folder per import, so cached models never meet another split)",
    )
    p.add_argument("--config", default="configs/nyala.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop", choices=("cam", "whole"), default="cam")
    p.add_argument(
        "--shortlist",
        type=int,
        default=100,
        help="gallery photos per query scored by every matcher (local matching is the slow part)",
    )
    p.add_argument("--calibration", type=int, default=150, help="gallery pseudo-queries")
    p.add_argument(
        "--calibration-new",
        type=int,
        default=20,
        help="at least this many individuals play new among the pseudo-queries (held out "
        "whole when too few have a single sighting)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--embed-size",
        type=int,
        default=None,
        help="untrained baselines' input size (default: the config's)",
    )
    p.add_argument("--protocols", default="closed,open")
    p.add_argument(
        "--methods",
        default="",
        help="comma-separated methods to score (default: all); e.g. trained,trained+local",
    )
    p.add_argument(
        "--level",
        choices=LEVELS,
        default="both",
        help="score per photo, per sighting (a query sighting's photos vote together), or both",
    )
    p.add_argument(
        "--per-sighting",
        action="store_true",
        help="same as --level both (kept for older commands)",
    )
    p.add_argument(
        "--local-mask",
        choices=MASKS,
        default=LocalConfig().mask,
        help="keypoints on the GrabCut foreground of the box, or anywhere in the box",
    )
    p.add_argument("--local-features", type=int, default=LocalConfig().features)
    p.add_argument("--local-size", type=int, default=LocalConfig().size, help="region px")
    p.add_argument("--local-model", choices=MODELS, default=LocalConfig().model)
    p.add_argument(
        "--local-upright",
        action=argparse.BooleanOptionalAction,
        default=LocalConfig().upright,
        help="descriptors at orientation 0 instead of each keypoint's own",
    )
    p.add_argument(
        "--local-mutual",
        action=argparse.BooleanOptionalAction,
        default=LocalConfig().mutual,
        help="keep only mutual nearest-neighbour matches",
    )
    p.add_argument(
        "--local-score",
        choices=SCORES,
        default=FusionConfig().score,
        help="a pair's RANSAC inliers, or one-vs-many LNBNN weights over the shortlist",
    )
    p.add_argument(
        "--local-neighbours",
        type=int,
        default=FusionConfig().neighbours,
        help="votes per query keypoint with --local-score lnbnn",
    )
    p.add_argument(
        "--local-normalise",
        choices=("query", "none"),
        default=FusionConfig().normalise,
        help="local scores over the query's shortlist median (against the database), or raw",
    )
    p.add_argument(
        "--local-pool",
        choices=POOLS,
        default=FusionConfig().pool,
        help="an individual's local score: its best shortlisted photo's (max), or the sum "
        "over its shortlisted photos (HotSpotter's name scoring)",
    )
    p.add_argument(
        "--fusion-weights",
        choices=("auto", "equal"),
        default="auto",
        help="matchers' weights in the fused mean: chosen on the calibration rows (auto), "
        "or equal (WildFusion's plain mean)",
    )
    p.add_argument(
        "--weight-grid",
        default=",".join(f"{w:g}" for w in WEIGHT_GRID),
        help="with --fusion-weights auto: the weights tried for each matcher after the "
        "first (which weighs 1), comma-separated",
    )
    p.add_argument(
        "--flank-variants",
        action="store_true",
        help="also score the trained model with flip TTA and with every flank compared",
    )
    p.add_argument(
        "--centred",
        action="store_true",
        help="also fuse the trained cosine centred on the query's shortlist median (how far "
        "a candidate stands out from the crowd the query meets)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's, one per core); on cores shared with "
        "other jobs, 1 avoids spin-waiting and can run faster",
    )
    p.add_argument(
        "--new-share",
        type=float,
        default=expected_new_share(),
        help="share of new_individual the MAP@5 operating point is tuned for (default: "
        "the protocol's design, %(default).2f); a negative value: unweighted",
    )
    p.add_argument(
        "--flank-classes",
        action="store_true",
        help="train each (individual, flank) as its own class (needs --side-regex)",
    )
    p.add_argument(
        "--subset",
        type=int,
        default=0,
        help="only this many individuals (seeded) of the catalogue: a quick smoke run",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a few-minute end-to-end check: --subset 60 and a 2-epoch 128 px training "
        "(overrides given after it still win)",
    )
    p.add_argument(
        "--tag",
        default="",
        help="write results-TAG.md / .json instead of results.md / .json (sweep variants "
        "sharing one OUT and its cached models)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides for the trained pipeline")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = default_out(args.data, args.group, args.subset or (60 if args.smoke else 0))
    if args.per_sighting:
        args.level = "both"
    if args.smoke:
        args.subset = args.subset or 60
        args.overrides = [*SMOKE_OVERRIDES, *args.overrides]
    if args.new_share is not None and args.new_share < 0:
        args.new_share = None
    return args


SMOKE_OVERRIDES = ("train.epochs=2", "train.image_size=128", "crop.size=192")
DEFAULT_DATA, DEFAULT_GROUP = "../shared/datasets/nyala", r"^(\d+)_"


def default_out(data: str, group: str, subset: int = 0) -> str:
    """working/bench/quality for the default catalogue and sighting regex, else a folder
    named by the catalogue (and -nogroup, -group<hash>, -subset<n>)."""
    if Path(data) == Path(DEFAULT_DATA) and group == DEFAULT_GROUP and not subset:
        return "working/bench/quality"
    name = Path(data).resolve().name or "catalogue"
    if not group:
        name += "-nogroup"
    elif group != DEFAULT_GROUP:
        name += f"-group{fingerprint(group)[:6]}"
    if subset:
        name += f"-subset{subset}"
    return f"working/bench/quality-{name}"


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        print(f"[{name}] {self.seconds[name]:.0f} s", flush=True)


# --- inputs shared by every method ----------------------------------------------------------


def subset_catalogue(src: Path, out: Path, n: int, seed: int) -> Path:
    """A folder of symbolic links to `n` seeded individuals' folders of `src` (a smoke run
    on part of a catalogue; nothing is copied)."""
    folders = sorted(
        {p.parent.relative_to(src) for p in src.rglob("*") if p.is_file() and p.parent != src}
    )
    individuals = sorted({f.name for f in folders})
    picked = set(np.random.default_rng(seed).permutation(individuals)[:n].tolist())
    target = out / f"subset-{n}-seed{seed}"
    for folder in folders:
        if folder.name in picked:
            link = target / folder
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to((src / folder).resolve(), target_is_directory=True)
    return target


def all_photos(protocols: dict[str, Protocol]) -> pd.DataFrame:
    """One row per photo (image name = hash of its source, the same in every protocol)."""
    tables = [t for p in protocols.values() for t in (p.gallery, p.queries)]
    return pd.concat(tables).drop_duplicates("image").set_index("image", drop=False)


def animal_boxes(photos: pd.DataFrame, out: Path, crop: str, progress: bool) -> pd.DataFrame:
    """CAM boxes (cached in OUT/boxes_<crop>.csv) or whole photos, one row per image."""
    cache = out / f"boxes_{crop}.csv"
    if cache.is_file():
        boxes = pd.read_csv(cache, dtype={"image": str})
        if set(boxes["image"]) >= set(photos["image"]):
            return boxes.set_index("image", drop=False)
    if crop == "cam":
        boxes = cam_boxes(
            photos["image"].tolist(), photos["path"].tolist(), config=CamConfig(), progress=progress
        )
    else:
        sizes = [read_rgb(p).shape[:2] for p in photos["path"]]
        boxes = pd.DataFrame(
            {
                "image": photos["image"].to_numpy(),
                "kind": "fullbody",
                "x1": 0,
                "y1": 0,
                "x2": [w for _, w in sizes],
                "y2": [h for h, _ in sizes],
                "area": 1.0,
            }
        )
    write_csv(boxes, cache)
    return boxes.set_index("image", drop=False)


def write_boxes(protocol: Protocol, boxes: pd.DataFrame) -> None:
    """boxes.csv in the imported folder: the crop stage of the trained pipeline reads it."""
    images = pd.concat([protocol.gallery["image"], protocol.queries["image"]])
    write_csv(boxes.loc[images].drop(columns="area"), protocol.root / "boxes.csv")


def box_of(boxes: pd.DataFrame, image: str) -> tuple[int, int, int, int]:
    return tuple(int(v) for v in boxes.loc[image, ["x1", "y1", "x2", "y2"]])


def crop_files(
    photos: pd.DataFrame, boxes: pd.DataFrame, out: Path, size: int = 384
) -> dict[str, str]:
    """Cropped copies for the untrained baselines (the trained pipeline makes its own)."""
    import cv2

    folder = out / "crops" / f"{boxes.index.name or 'box'}_{size}"
    files = {}
    for image, path in zip(photos["image"], photos["path"], strict=True):
        target = folder / f"{Path(image).stem}.png"
        if not target.is_file():
            photo = cv2.imread(path, cv2.IMREAD_COLOR)
            h, w = photo.shape[:2]
            crop = crop_image(photo, expand_box(box_of(boxes, image), 0.0, w, h), size)
            with atomic_path(target) as tmp:
                cv2.imwrite(str(tmp), crop)
        files[image] = str(target)
    return files


def pipeline_config(
    protocol: Protocol, args: argparse.Namespace, out: Path, exclude: Sequence[str] = ()
) -> Config:
    """The trained pipeline's config, its run folder named by what the model depends on."""
    config = load_config(
        args.config,
        [f"data={protocol.root}", f"working={out / 'pipeline'}", "baseline=false", *args.overrides],
    )
    # The run folder is named by what the model depends on, so a re-run with other settings,
    # boxes or left-out photos trains afresh instead of resuming a checkpoint made for
    # something else. No exclusion adds nothing, so such runs keep their existing folders.
    parts = [
        config.section_dict("crop", "model", "loss", "train"),
        args.crop,
        args.seed,
        args.flank_classes,
        *([sorted(exclude)] if exclude else []),
    ]
    config.name = f"quality-{protocol.name}-{fingerprint(*parts)[:8]}"
    return config


def training_split(
    config: Config, protocol: Protocol, exclude: Sequence[str], flank: bool
) -> tuple[Competition, pd.DataFrame]:
    """`pipeline.prepare`'s split without the `exclude` photos (they are still embedded,
    as `competition.train` keeps them); split.csv is rewritten to what is trained on."""
    competition, split = pipeline.prepare(config)
    if exclude:
        if pipeline.fold_ids(config) != [0]:
            raise ValueError(
                f"train.folds={config.train.folds}: leaving calibration photos "
                "out of training is only done for one fold; set train.folds=1."
            )
        split = split[~split["image"].isin(set(exclude))].reset_index(drop=True)
    if flank:
        split = flank_classes(split, protocol.gallery)
    write_csv(split, RunLayout.of(config).split)
    return competition, split


def trained_features(
    protocol: Protocol,
    args: argparse.Namespace,
    out: Path,
    timer: Timer,
    progress: bool,
    exclude: Sequence[str] = (),
    flip: str | None = None,
) -> dict[str, np.ndarray]:
    """Train the package's pipeline on this protocol's gallery less `exclude` (skipped
    when trained); embed gallery (all of it) and queries, stored in the run folder and
    reused while model, crops and settings are unchanged. `flip` overrides the config's
    `embed.flip_tta` for this embedding only (same model; its own embedding folder)."""
    config = pipeline_config(protocol, args, out, exclude)
    competition, split = training_split(config, protocol, exclude, args.flank_classes)
    crops = pipeline.crop(config, competition, progress)
    with timer(f"train {protocol.name}"):
        best = pipeline.train(config, crops, split, progress)[0]
    layout = RunLayout.of(config)
    folder = layout.embeddings(0)
    config.embed.dtype = "float32"  # the scores the benchmark always had (and identify's check)
    if flip is not None and flip != config.embed.flip_tta:
        config.embed.flip_tta = flip
        folder = layout.root / f"embeddings-flip-{flip}" / "fold0"
    label = "" if flip is None else f" flip-{flip}"
    with timer(f"embed trained{label} {protocol.name}"):
        model = load_trained(config, best, resolve_device(config.train.device))
        embeddings = pipeline.embed(config, competition, crops, model, folder, progress)
    train = np.asarray(embeddings.train, np.float32)
    test = np.asarray(embeddings.test, np.float32)
    return {
        **dict(zip(competition.train["image"], train, strict=True)),
        **dict(zip(competition.test["image"], test, strict=True)),
    }


# --- methods' features -------------------------------------------------------------------------


def untrained_features(
    backbone: str, files: dict[str, str], size: int, workers: int, progress: bool, out: Path
) -> dict[str, np.ndarray]:
    """GeM-pooled ImageNet features of every crop, cached in OUT/cache (keyed by the
    backbone, size and crop files), so a re-run reads them."""
    images = list(files)
    key = fingerprint(backbone, size, [file_identity(files[i]) for i in images])
    cached = out / "cache" / f"imagenet_{backbone}_{size}_{key}.npz"
    if cached.is_file():
        with np.load(cached) as data:
            return dict(zip(data["images"].tolist(), data["vectors"], strict=True))
    net = EmbeddingNet(ModelConfig(backbone=backbone)).eval()
    vectors = embed_paths(
        net.pooled,
        [files[i] for i in images],
        eval_transform(size, net.mean_std),
        batch_size=32,
        flip_tta=False,
        num_workers=min(workers, 1),
        desc=f"embed {backbone}",
        progress=progress,
    )
    with atomic_path(cached, suffix=".npz") as tmp:
        np.savez(tmp, images=np.array(images), vectors=vectors)
    return dict(zip(images, vectors, strict=True))


# --- methods ------------------------------------------------------------------------------------


class Method(NamedTuple):
    """One table row: the matchers fused (by name), the global features whose cosine
    shortlists the gallery, whether flanks are compared only with flanks, and the timer
    entries (of the protocol, `{p}`) its inputs cost. (A NamedTuple: a dataclass needs its
    module registered, which a benchmark loaded from its file is not.)"""

    name: str
    matchers: tuple[str, ...]
    priority: str
    same_side: bool = True
    inputs: tuple[str, ...] = ()


def methods(args: argparse.Namespace) -> list[Method]:
    base = f"imagenet_{BASELINES[0]}"
    out = [
        Method(f"imagenet_{b}", (f"imagenet_{b}",), f"imagenet_{b}", inputs=(f"imagenet {b}",))
        for b in BASELINES
    ]
    out += [
        Method("local", ("local",), base, inputs=(f"imagenet {BASELINES[0]}", "local extract")),
        Method("trained", ("trained",), "trained", inputs=("train {p}", "embed trained {p}")),
        Method(
            "trained+local",
            ("trained", "local"),
            "trained",
            inputs=("train {p}", "embed trained {p}", "local extract"),
        ),
    ]
    if args.flank_variants:
        out += [
            Method(
                "trained flip-TTA",
                ("trained_flip",),
                "trained_flip",
                inputs=("train {p}", "embed trained flip-mean {p}"),
            ),
            Method(
                "trained all-flanks",
                ("trained",),
                "trained",
                same_side=False,
                inputs=("train {p}", "embed trained {p}"),
            ),
            Method(
                "trained+local flip-TTA",
                ("trained_flip", "local"),
                "trained_flip",
                inputs=("train {p}", "embed trained flip-mean {p}", "local extract"),
            ),
        ]
    if args.centred:
        out += [
            Method(
                "trained+centred",
                ("trained", "trained-centred"),
                "trained",
                inputs=("train {p}", "embed trained {p}"),
            ),
            Method(
                "trained+local+centred",
                ("trained", "local", "trained-centred"),
                "trained",
                inputs=("train {p}", "embed trained {p}", "local extract"),
            ),
        ]
    if args.methods:
        wanted = set(args.methods.split(","))
        unknown = wanted - {m.name for m in out}
        if unknown:
            raise SystemExit(
                f"--methods: unknown {sorted(unknown)}; known: {[m.name for m in out]}"
            )
        out = [m for m in out if m.name in wanted]
    return out


def priority_scores(
    features: dict[str, np.ndarray], protocol: Protocol, cal: Calibration, same_side: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Dense (queries x gallery) and (calibration rows x gallery) cosines of the shortlist
    features: -inf across flanks (with `same_side`) and on each pseudo-query's masked photos."""
    g, q = protocol.gallery, protocol.queries
    if same_side:
        qs = query_scores(features, protocol)
        allowed = side_mask(g["side"].iloc[cal.rows], g["side"]) & cal.mask
    else:
        qs = cosine(features, q["image"], g["image"])
        allowed = cal.mask
    cs = np.where(allowed, cosine(features, g["image"].iloc[cal.rows], g["image"]), -np.inf)
    return qs, cs


def score_method(
    method: Method,
    protocol: Protocol,
    cal: Calibration,
    features: dict[str, dict[str, np.ndarray]],
    matchers: dict[str, Matcher],
    shortlist: int,
) -> tuple[FusedScores, FusedScores, CalibratedFusion]:
    """Stages 1-2: shortlists by the priority features, raw scores of every matcher."""
    g, q = protocol.gallery, protocol.queries
    qs, cs = priority_scores(features[method.priority], protocol, cal, method.same_side)
    fusion = CalibratedFusion([matchers[m] for m in method.matchers])
    rows = g["image"].iloc[cal.rows].tolist()
    return (
        fusion.score(q["image"].tolist(), g["image"].tolist(), Shortlist.top(qs, shortlist)),
        fusion.score(rows, g["image"].tolist(), Shortlist.top(cs, shortlist)),
        fusion,
    )


def calibrations_of(
    fusion: CalibratedFusion,
    cal_scores: FusedScores,
    protocol: Protocol,
    cal: Calibration,
    args: argparse.Namespace,
    keep: np.ndarray | None = None,
) -> CalibratedFusion:
    """The method fitted on the calibration rows' shortlisted pairs (those of them in
    `keep`): each matcher's isotonic calibration, and with `--fusion-weights auto` the
    matchers' weights (`choose_weights`, on the same rows)."""
    ids = protocol.gallery["individual_id"].to_numpy()
    rows = np.arange(len(cal.rows)) if keep is None else np.flatnonzero(keep)
    scored = cal_scores.take(rows)
    truths = [cal.truths[r] for r in rows]
    same = same_pairs(scored.shortlist, ids, truths)
    source = (
        "trained-on calibration rows (inflated)"
        if trains_on_calibration(protocol)
        else "held-out calibration rows"
    )
    fitted = fusion.fit(scored, same, source)
    if args.fusion_weights == "auto":
        grid = [float(w) for w in args.weight_grid.split(",")]
        fitted = fitted.with_weights(choose_weights(fusion, scored, same, ids, truths, grid))
    return fitted


def open_figures(
    ranking: Ranking, truths: list[str], points: OperatingPoints
) -> dict[str, dict[str, float]]:
    """Open-set figures at each operating point, with every query called new, and at
    `oracle`: the gmean-optimal threshold chosen on these queries' own labels, a ceiling
    that shows what the label-free choice leaves on the table (never a result)."""
    out = {
        point: open_scores(ranking, truths, points.threshold(point)) for point in ("map5", "gmean")
    }
    out["all_new"] = open_scores(ranking, truths, float("inf"))
    every = threshold_grid(ranking, steps=None)
    oracle = choose_operating_points(ranking, truths, grid=every).gmean
    out["oracle"] = open_scores(ranking, truths, oracle)
    return out


def evaluate_method(
    method: Method,
    protocol: Protocol,
    cal: Calibration,
    scored: tuple[FusedScores, FusedScores, CalibratedFusion],
    fitted: CalibratedFusion,
    args: argparse.Namespace,
) -> dict[str, dict]:
    """Stages 3-4: calibrate, fuse, rank; closed-set figures, or open-set figures at both
    operating points (chosen on the calibration rows). One entry per level."""
    g, q = protocol.gallery, protocol.queries
    ids = g["individual_id"].to_numpy()
    q_raw, c_raw, _ = scored
    q_fused, c_fused = fitted.calibrate(q_raw), fitted.calibrate(c_raw)
    weights = None if args.new_share is None else share_weights(cal.truths, args.new_share)
    levels: dict[str, tuple[Ranking, Ranking, list[str], np.ndarray | None]] = {}
    if args.level in ("photo", "both"):
        levels["photo"] = (
            rank_shortlist(q_fused.shortlist, q_fused.fused, ids),
            rank_shortlist(c_fused.shortlist, c_fused.fused, ids),
            cal.truths,
            weights,
        )
    if args.level in ("sighting", "both") and one_individual_per_sighting(pd.concat([g, q])):
        pq, individuals = pool_by_sighting(q_fused.dense(len(g)), ids, q["group"].to_numpy())
        pc, _, pooled = pool_calibration(c_fused.dense(len(g)), ids, cal, g["group"].to_numpy())
        levels["sighting"] = (
            rank(pq, individuals),
            rank(pc, individuals),
            pooled.truths,
            weights,
        )
    out: dict[str, dict] = {}
    for level, (q_rank, c_rank, c_truths, w) in levels.items():
        if protocol.name == "closed":
            out[level] = closed_scores(q_rank, protocol.truths)
            continue
        points = choose_operating_points(c_rank, c_truths, w)
        out[level] = {
            **open_figures(q_rank, protocol.truths, points),
            "calibration": {p: points.at(p) for p in ("map5", "gmean")},
        }
    out["calibrations"] = {n: c.to_json() for n, c in fitted.calibrations.items()}
    out["weights"] = dict(zip(fitted.names, fitted.weights, strict=True))
    return out


def evaluate_protocol(
    protocol: Protocol,
    cal: Calibration,
    features: dict[str, dict[str, np.ndarray]],
    matchers: dict[str, Matcher],
    args: argparse.Namespace,
    timer: Timer,
    given: dict[str, CalibratedFusion] | None = None,
    closed_queries: Collection[str] = (),
) -> tuple[dict[str, dict], dict[str, CalibratedFusion]]:
    """Every method's figures on one protocol, and (with `closed_queries`, open protocol)
    each method fitted for the closed protocol: calibrations and weights fitted on the
    calibration rows whose photos are not closed queries, so no closed query's label
    touches them. `given` (closed protocol): those, used instead of its own inflated ones."""
    results: dict[str, dict] = {}
    for_closed: dict[str, CalibratedFusion] = {}
    rows = protocol.gallery["image"].iloc[cal.rows]
    for method in methods(args):
        if any(m not in matchers for m in method.matchers) or method.priority not in features:
            continue
        with timer(f"{method.name} {protocol.name}"):
            scored = score_method(method, protocol, cal, features, matchers, args.shortlist)
            own = calibrations_of(scored[2], scored[1], protocol, cal, args)
            use, source = own, "own calibration rows"
            if given is not None and method.name in given:
                use, source = given[method.name], "open run's held-out calibration rows"
            results[method.name] = evaluate_method(method, protocol, cal, scored, use, args)
            results[method.name]["calibration_source"] = source
            if closed_queries:
                keep = ~rows.isin(set(closed_queries)).to_numpy()
                for_closed[method.name] = calibrations_of(
                    scored[2], scored[1], protocol, cal, args, keep
                )
        inputs = [k.format(p=protocol.name) for k in method.inputs]
        results[method.name]["seconds"] = round(
            sum(timer.seconds.get(k, 0.0) for k in [*inputs, f"{method.name} {protocol.name}"]),
            1,
        )
    return results, for_closed


# --- report -----------------------------------------------------------------------------------


def write_matches(
    protocol: Protocol,
    features: dict[str, np.ndarray],
    files: dict[str, str],
    out: Path,
    seed: int,
    n: int = 12,
    k: int = 5,
) -> Path:
    """OUT/matches_<protocol>.png: `n` seeded queries, each with its top-k gallery photos
    by the trained model's cosine (same flank), green when the individual is right."""
    g, q = protocol.gallery, protocol.queries
    scores = query_scores(features, protocol)
    picked = np.sort(np.random.default_rng(seed).permutation(len(q))[:n])
    gallery_ids, query_ids = g["individual_id"].to_numpy(), q["individual_id"].to_numpy()
    rows = []
    for r in picked:
        top = np.argsort(-scores[r], kind="stable")[:k]
        top = top[np.isfinite(scores[r, top])]
        rows.append(
            (
                files[q["image"].iloc[r]],
                [(files[g["image"].iloc[c]], gallery_ids[c] == query_ids[r]) for c in top],
            )
        )
    return match_gallery(rows, out / f"matches_{protocol.name}.png")


def _label(method: str, level: str) -> str:
    return method if level == "photo" else f"{method} [sighting]"


def rows_of(results: dict, protocol: str) -> list[tuple[str, dict, float]]:
    """(table label, figures, seconds) per method and level of one protocol."""
    out = []
    for method, entry in results.get(protocol, {}).items():
        for level in ("photo", "sighting"):
            if level in entry:
                out.append((_label(method, level), entry[level], entry.get("seconds", 0.0)))
    return out


def markdown(results: dict, seconds: dict[str, float], command: str, info: dict) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"Data: {info['data']}: {info['photos']} photos, {info['individuals']} individuals;"
        f" crop: {info['crop']}; shortlist: top {info['shortlist']} gallery photos per query;"
        f" local: {info['local']}.",
        "",
        "Each method is the mean of its matchers' isotonic-calibrated P(same individual) "
        "(one matcher: its own calibration). Seconds: the method's inputs (training, "
        "embedding, keypoint extraction) and its matching and calibration in this run; "
        "work cached by an earlier run counts 0.",
        "",
    ]
    if "closed" in results:
        lines += [
            f"Closed set ({info['closed_queries']} queries, {info['closed_gallery']} "
            "gallery photos):",
            "",
            "| method | top-1 | MAP@5 | seconds |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {m} | {v['top1']:.3f} | {v['map5']:.3f} | {s:.0f} |"
            for m, v, s in rows_of(results, "closed")
        ]
        lines.append("")
    if "open" in results:
        lines += [
            f"Open set ({info['open_queries']} queries, {info['open_new']} of them "
            f"new individuals; {info['open_gallery']} gallery photos). Two operating points, "
            "each chosen on gallery pseudo-queries only: MAP@5-optimal and "
            "sqrt(BAKS*BAUS)-optimal; `all new`: MAP@5 when every query is called new first; "
            "`oracle`: the gmean-optimal threshold chosen on the queries' own labels, a "
            "ceiling for the label-free choice, not a result.",
            "",
            "| method | point | P(same) threshold | MAP@5 | BAKS | BAUS | gmean | all new MAP@5 "
            "| seconds |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for m, v, s in rows_of(results, "open"):
            for point in ("map5", "gmean", "oracle"):
                f = v[point]
                lines.append(
                    f"| {m} | {point} | {f['threshold']:.3f} | {f['map5']:.3f} | "
                    f"{f['baks']:.3f} | {f['baus']:.3f} | {f['gmean']:.3f} | "
                    f"{v['all_new']['map5']:.3f} | {s:.0f} |"
                )
        lines.append("")
    lines += [
        "Time per step (s, this run; cached work is not redone):",
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in seconds.items()]
    return "\n".join(lines) + "\n"


def figures_of(results: dict) -> dict:
    """The headline figures (the JSON line): closed top-1 / MAP@5, open figures at the
    gmean- and MAP@5-optimal points, per method and level."""
    out: dict[str, dict] = {"closed": {}, "open": {}}
    for label, v, s in rows_of(results, "closed"):
        out["closed"][label] = {"top1": round(v["top1"], 4), "map5": round(v["map5"], 4), "s": s}
    for label, v, s in rows_of(results, "open"):
        g, m = v["gmean"], v["map5"]
        out["open"][label] = {
            "map5": round(m["map5"], 4),
            "baks": round(g["baks"], 4),
            "baus": round(g["baus"], 4),
            "gmean": round(g["gmean"], 4),
            "map5_at_gmean": round(g["map5"], 4),
            "gmean_at_map5": round(m["gmean"], 4),
            "all_new_map5": round(v["all_new"]["map5"], 4),
            "oracle_baks": round(v["oracle"]["baks"], 4),
            "oracle_gmean": round(v["oracle"]["gmean"], 4),
            "s": s,
        }
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if not np.isfinite(value) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    progress = not args.no_progress
    out = Path(args.out)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = Timer()
    wanted = [p for p in args.protocols.split(",") if p]
    data = Path(args.data)
    if args.subset:
        data = subset_catalogue(data, out, args.subset, args.seed)
    with timer("import"):
        protocols = import_protocols(
            data,
            out / "data",
            args.group,
            args.seed,
            args.side_regex or None,
            follow_links=bool(args.subset),
        )
        protocols = {k: v for k, v in protocols.items() if k in wanted}
    photos = all_photos(protocols)
    with timer(f"boxes ({args.crop})"):
        boxes = animal_boxes(photos, out, args.crop, progress)
        for protocol in protocols.values():
            write_boxes(protocol, boxes)
    config = load_config(args.config, args.overrides)
    size = args.embed_size or config.train.image_size
    files = crop_files(photos, boxes, out)
    shared: dict[str, dict[str, np.ndarray]] = {}
    chosen = methods(args)
    needed = {
        m.removesuffix("-centred") for method in chosen for m in (*method.matchers, method.priority)
    }
    for backbone in BASELINES:
        if f"imagenet_{backbone}" in needed:
            with timer(f"imagenet {backbone}"):
                shared[f"imagenet_{backbone}"] = untrained_features(
                    backbone, files, size, args.workers, progress, out
                )
    local = LocalConfig(
        size=args.local_size,
        features=args.local_features,
        mask=args.local_mask,
        model=args.local_model,
        upright=args.local_upright,
        mutual=args.local_mutual,
        score=args.local_score,
        neighbours=args.local_neighbours,
    )
    pairs = None
    if "local" in needed:
        with timer("local extract"):
            feats = extract_paths(
                photos["path"].tolist(),
                [box_of(boxes, i) for i in photos["image"]],
                local,
                out / "cache" / "sift",
                args.workers,
                progress,
            )
        pairs = PairCache(
            dict(zip(photos["image"], feats, strict=True)),
            local,
            args.workers,
            progress,
            out / "cache" / f"pairs_{args.crop}_{fingerprint(asdict(local))}.csv",
        )
    individual_of = dict(zip(photos["image"], photos["individual_id"], strict=True))
    results: dict[str, dict] = {}
    for_closed: dict[str, CalibratedFusion] | None = None
    # Open first: the closed protocol takes its calibrations from the open run's held-out
    # calibration rows that are not closed queries.
    for name in sorted(protocols, key=lambda n: n != "open"):
        protocol = protocols[name]
        cal = calibration(protocol.gallery, args.calibration, args.seed, args.calibration_new)
        features = dict(shared)
        exclude = training_exclusion(protocol, cal)
        if "trained" in needed or "trained_flip" in needed:
            features["trained"] = trained_features(protocol, args, out, timer, progress, exclude)
        if "trained_flip" in needed:
            features["trained_flip"] = trained_features(
                protocol, args, out, timer, progress, exclude, flip="mean"
            )
        matchers: dict[str, Matcher] = {n: CosineMatcher(f, n) for n, f in features.items()}
        if "trained" in matchers:
            matchers["trained-centred"] = CentredMatcher(matchers["trained"])
        if pairs is not None:
            matchers["local"] = PooledMatcher(
                LocalMatcher(pairs, args.local_normalise), individual_of, args.local_pool
            )
        closed_queries = (
            set(protocols["closed"].queries["image"])
            if name == "open" and "closed" in protocols
            else set()
        )
        given = for_closed if name == "closed" else None
        results[name], made = evaluate_protocol(
            protocol, cal, features, matchers, args, timer, given, closed_queries
        )
        if name == "open":
            for_closed = made
        if "trained" in features:
            print(
                f"{write_matches(protocol, features['trained'], files, out, args.seed)}: "
                "trained model's top matches (green: right individual)",
                flush=True,
            )
        for label, figures, s in rows_of(results, name):
            shown = figures if name == "closed" else figures["gmean"]
            print(
                f"{name:6s} {label:36s} "
                + "  ".join(f"{k} {v:.3f}" for k, v in shown.items() if isinstance(v, float))
                + f"  ({s:.0f} s)",
                flush=True,
            )
    command = "python benchmarks/bench_quality.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    info = {
        "data": args.data,
        "subset": args.subset,
        "group": args.group,
        "photos": len(photos),
        "individuals": photos["individual_id"].nunique(),
        "crop": args.crop,
        "shortlist": args.shortlist,
        "local": f"mask {local.mask}, {local.size} px, {local.features} keypoints, "
        f"{'upright' if local.upright else 'oriented'}, {local.model}"
        f"{', mutual' if local.mutual else ''}, "
        + (f"LNBNN {local.neighbours} votes" if local.score == "lnbnn" else "inliers")
        + f", normalise {args.local_normalise}",
        "calibration": args.calibration,
        "calibration_new": args.calibration_new,
        "new_share": args.new_share,
    }
    for name, p in protocols.items():
        info[f"{name}_queries"], info[f"{name}_gallery"] = len(p.queries), len(p.gallery)
        info[f"{name}_new"] = int((p.queries["truth"] == NEW_INDIVIDUAL).sum())
    seconds = {k: round(v, 1) for k, v in timer.seconds.items()}
    stem = f"results-{args.tag}" if args.tag else "results"
    write_text(out / f"{stem}.md", markdown(results, seconds, command, info))
    figures = figures_of(results)
    write_text(
        out / f"{stem}.json",
        json.dumps(
            _jsonable({**figures, "seconds": seconds, "info": info, "details": results}), indent=2
        ),
    )
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
