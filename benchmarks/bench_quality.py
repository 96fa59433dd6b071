"""Quality benchmark on a real folder-per-individual catalogue (default: wild nyala).

    make bench-quality [DATA=../shared/datasets/nyala] [GROUP='^(\\d+)_']

Imports the catalogue twice with `import_catalogue` (split by sighting group, seed 0):
a closed-set protocol (about 20% of each multi-sighting individual's sightings are
queries) and an open-set one (about 20% of individuals also held out whole as new), and
scores side by side on the same splits:

* imagenet_<backbone>: shipped ImageNet features (GeM pooled), no training;
* sift: SIFT + ratio test + RANSAC inlier counts, each query against the top-N gallery
  photos of the untrained MobileNetV2 (a training-free pipeline end to end);
* trained: the package's pipeline (configs/nyala.yaml) trained on the gallery only;
  in the open protocol, without the calibration sightings (below);
* trained+sift: trained cosine + w * log(1 + inliers) over the trained model's top-N,
  w chosen on the gallery (leave one sighting out), never on the queries.

Every method sees the animal box from `wildid.crop.saliency` (class activation map of the
shipped ImageNet classifier) and compares only same-flank photos when the file names say
the flank (`--side-regex`, nyala: `_leftphoto` / `_rightphoto`). The open-set
`new_individual` threshold of each method is tuned leave-one-sighting-out on
`--calibration` gallery pseudo-queries, weighted so that new ones carry the share of new
queries the protocol's design implies (`--new-share`; the pseudo-queries alone hold far
fewer new ones, and an unweighted threshold calls too few queries new). The open
protocol's trained model does not train on those pseudo-queries' sightings (they stay in
the gallery, embedded), so its threshold and fusion weight are tuned on similarities it
was not fitted to. The closed protocol trains on its whole gallery (no threshold; top-1 is
the headline) and takes its fusion weight from the open run: chosen there on held-out
calibration rows that are not closed queries. Run alone (`--protocols closed`), it chooses
the weight on its own trained-on, inflated rows.

The methods live in the package: `wildid.matching.fusion` (shortlist, pair cache,
fusion weight), `wildid.matching.sightings` (the `--per-sighting` rows) and
`wildid.evaluation.protocols` (flank masks and classes, calibration and its training
hold-out, scoring); this script makes their inputs, calls them and writes the tables.

Writes working/bench/quality/results.md, results.json and matches_<protocol>.png (sampled
queries with the trained model's top matches); the last line printed is JSON.
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

import numpy as np
import pandas as pd
import torch

import wildid  # noqa: F401  (offline switches)
from wildid import pipeline
from wildid.cache import fingerprint
from wildid.config import Config, ModelConfig, load_config
from wildid.crop.boxes import crop_image, expand_box
from wildid.crop.saliency import CamConfig, cam_boxes
from wildid.data.competition import Competition
from wildid.data.dataset import read_rgb
from wildid.data.transforms import eval_transform
from wildid.evaluation.plots import match_gallery
from wildid.evaluation.protocols import (
    Calibration,
    Protocol,
    calibration,
    calibration_scores,
    expected_new_share,
    flank_classes,
    import_protocols,
    protocol_scores,
    query_scores,
    rank,
    training_exclusion,
)
from wildid.infer.embed import embed_paths
from wildid.io import atomic_path, write_csv, write_text
from wildid.layout import RunLayout
from wildid.matching.fusion import PairCache, fuse, fusion_weights, shortlist
from wildid.matching.local import LocalConfig, extract_paths
from wildid.matching.sightings import (
    one_individual_per_sighting,
    pool_by_sighting,
    pool_calibration,
)
from wildid.models.net import EmbeddingNet
from wildid.train.engine import load_trained, resolve_device

BASELINES = ("mobilenetv2_100", "efficientnet_lite0")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/datasets/nyala")
    p.add_argument("--group", default=r"^(\d+)_", help="sighting regex; '' = photo per group")
    p.add_argument(
        "--side-regex",
        default=r"_(left|right)",
        help="flank in the file name; '' = compare every pair",
    )
    p.add_argument("--out", default="working/bench/quality")
    p.add_argument("--config", default="configs/nyala.yaml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop", choices=("cam", "whole"), default="cam")
    p.add_argument("--shortlist", type=int, default=40, help="gallery photos matched by SIFT")
    p.add_argument("--calibration", type=int, default=150, help="gallery pseudo-queries")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--embed-size",
        type=int,
        default=None,
        help="untrained baselines' input size (default: the config's)",
    )
    p.add_argument("--protocols", default="closed,open")
    p.add_argument(
        "--per-sighting",
        action="store_true",
        help="also score each query sighting's photos pooled (extra table rows)",
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
        help="share of new_individual the open-set threshold is tuned for (default: "
        "the protocol's design, %(default).2f); a negative value: unweighted",
    )
    p.add_argument(
        "--flank-classes",
        action="store_true",
        help="train each (individual, flank) as its own class (needs --side-regex)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides for the trained pipeline")
    return p.parse_args(argv)


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


# --- methods ----------------------------------------------------------------------------------


def untrained_features(
    backbone: str, files: dict[str, str], size: int, workers: int, progress: bool
) -> dict[str, np.ndarray]:
    net = EmbeddingNet(ModelConfig(backbone=backbone)).eval()
    images = list(files)
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
    return dict(zip(images, vectors, strict=True))


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
) -> dict[str, np.ndarray]:
    """Train the package's pipeline on this protocol's gallery less `exclude`; embed
    gallery (all of it) and queries."""
    config = pipeline_config(protocol, args, out, exclude)
    competition, split = training_split(config, protocol, exclude, args.flank_classes)
    crops = pipeline.crop(config, competition, progress)
    with timer(f"train {protocol.name}"):
        best = pipeline.train(config, crops, split, progress)[0]
    with timer(f"embed trained {protocol.name}"):
        model = load_trained(config, best, resolve_device(config.train.device))
        embeddings = pipeline.embed(config, competition, crops, model, progress=progress)
    return {
        **dict(zip(competition.train["image"], embeddings.train, strict=True)),
        **dict(zip(competition.test["image"], embeddings.test, strict=True)),
    }


# --- one protocol -----------------------------------------------------------------------------


def evaluate_protocol(
    protocol: Protocol,
    cal: Calibration,
    global_features: dict[str, dict[str, np.ndarray]],
    pairs: PairCache,
    args: argparse.Namespace,
    timer: Timer,
    given_weight: float | None = None,
    closed_queries: Collection[str] = (),
) -> tuple[dict[str, dict[str, float]], dict[str, float | str]]:
    """Every method's figures on one protocol. `cal` tunes the open threshold and must be
    the one the open model was kept off in training; fusion arguments: `fusion_weights`."""
    g, q = protocol.gallery, protocol.queries
    ids = g["individual_id"].to_numpy()
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {
        name: (query_scores(features, protocol), calibration_scores(features, protocol, cal))
        for name, features in global_features.items()
    }
    extra: dict[str, float | str] = {}
    base = f"imagenet_{BASELINES[0]}"
    with timer(f"sift match {protocol.name}"):
        counts = [
            pairs.matrix(rows, g["image"], shortlist(s, args.shortlist))
            for rows, s in (
                (q["image"], scores[base][0]),
                (g["image"].iloc[cal.rows], scores[base][1]),
            )
        ]
    scores["sift"] = tuple(np.where(c >= 0, c, -np.inf) for c in counts)
    if "trained" in scores:
        with timer(f"fusion match {protocol.name}"):
            tq, tc = scores["trained"]
            fq = pairs.matrix(q["image"], g["image"], shortlist(tq, args.shortlist))
            fc = pairs.matrix(g["image"].iloc[cal.rows], g["image"], shortlist(tc, args.shortlist))
        extra.update(
            fusion_weights(
                tc, fc, ids, cal, g["image"].iloc[cal.rows], protocol, given_weight, closed_queries
            )
        )
        weight = float(extra["fusion_weight"])
        scores["trained+sift"] = (fuse(tq, fq, weight), fuse(tc, fc, weight))
    results: dict[str, dict[str, float]] = {}
    for name, (sq, sc) in scores.items():
        results[name] = protocol_scores(protocol, rank(sq, ids), sc, ids, cal, args.new_share)
    if args.per_sighting and one_individual_per_sighting(pd.concat([g, q])):
        for name, (sq, sc) in scores.items():
            pq, individuals = pool_by_sighting(sq, ids, q["group"].to_numpy())
            pc, _, pooled_cal = pool_calibration(sc, ids, cal, g["group"].to_numpy())
            results[f"{name} [sighting]"] = protocol_scores(
                protocol, rank(pq, individuals), pc, individuals, pooled_cal, args.new_share
            )
    return results, extra


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


def markdown(results: dict, seconds: dict[str, float], command: str, info: dict) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"Data: {info['data']}: {info['photos']} photos, {info['individuals']} individuals;"
        f" crop: {info['crop']}; SIFT shortlist: top {info['shortlist']} gallery photos.",
        "",
    ]
    if "closed" in results:
        c = results["closed"]
        lines += [
            f"Closed set ({info['closed_queries']} queries, {info['closed_gallery']} "
            "gallery photos):",
            "",
            "| method | top-1 | MAP@5 |",
            "|---|---|---|",
        ]
        lines += [f"| {m} | {v['top1']:.3f} | {v['map5']:.3f} |" for m, v in c.items()]
        lines.append("")
    if "open" in results:
        o = results["open"]
        lines += [
            f"Open set ({info['open_queries']} queries, {info['open_new']} of them "
            f"new individuals; {info['open_gallery']} gallery photos):",
            "",
            "| method | MAP@5 | BAKS | BAUS | sqrt(BAKS*BAUS) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {m} | {v['map5']:.3f} | {v['baks']:.3f} | {v['baus']:.3f} | {v['gmean']:.3f} |"
            for m, v in o.items()
        ]
        lines.append("")
    lines += [
        "Time per step (s, CPU shared with other jobs, so noisy):",
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in seconds.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.new_share is not None and args.new_share < 0:
        args.new_share = None
    progress = not args.no_progress
    out = Path(args.out)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    timer = Timer()
    wanted = [p for p in args.protocols.split(",") if p]
    with timer("import"):
        protocols = import_protocols(
            args.data, out / "data", args.group, args.seed, args.side_regex or None
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
    global_by_protocol: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    shared: dict[str, dict[str, np.ndarray]] = {}
    for backbone in BASELINES:
        with timer(f"imagenet {backbone}"):
            shared[f"imagenet_{backbone}"] = untrained_features(
                backbone, files, size, args.workers, progress
            )
    with timer("sift extract"):
        local = LocalConfig()
        paths = photos["path"].tolist()
        feats = extract_paths(
            paths,
            [box_of(boxes, i) for i in photos["image"]],
            local,
            out / "cache" / "sift",
            args.workers,
            progress,
        )
        sift = dict(zip(photos["image"], feats, strict=True))
    pairs = PairCache(
        sift,
        local,
        args.workers,
        progress,
        out / "cache" / f"pairs_{args.crop}_{fingerprint(asdict(local))}.csv",
    )
    results: dict[str, dict] = {}
    extra: dict[str, dict] = {}
    # Open first: the closed protocol takes its fusion weight from the open run's held-out
    # calibration rows (see fusion_weights).
    for name in sorted(protocols, key=lambda n: n != "open"):
        protocol = protocols[name]
        cal = calibration(protocol.gallery, args.calibration, args.seed)
        trained = trained_features(
            protocol, args, out, timer, progress, training_exclusion(protocol, cal)
        )
        global_by_protocol[name] = {**shared, "trained": trained}
        given = extra.get("open", {}).get("fusion_weight_for_closed") if name == "closed" else None
        closed_queries = (
            set(protocols["closed"].queries["image"])
            if name == "open" and "closed" in protocols
            else set()
        )
        results[name], extra[name] = evaluate_protocol(
            protocol, cal, global_by_protocol[name], pairs, args, timer, given, closed_queries
        )
        print(
            f"{write_matches(protocol, trained, files, out, args.seed)}: trained model's "
            "top matches (green: right individual)",
            flush=True,
        )
        for method, figures in results[name].items():
            print(
                f"{name:6s} {method:40s} "
                + "  ".join(f"{k} {v:.3f}" for k, v in figures.items() if isinstance(v, float)),
                flush=True,
            )
    command = "python benchmarks/bench_quality.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    info = {
        "data": args.data,
        "photos": len(photos),
        "individuals": photos["individual_id"].nunique(),
        "crop": args.crop,
        "shortlist": args.shortlist,
    }
    for name, p in protocols.items():
        info[f"{name}_queries"], info[f"{name}_gallery"] = len(p.queries), len(p.gallery)
        info[f"{name}_new"] = int((p.queries["truth"] == "new_individual").sum())
    seconds = {k: round(v, 1) for k, v in timer.seconds.items()}
    write_text(out / "results.md", markdown(results, seconds, command, info))
    figures = {
        "closed": {
            m: {"top1": round(v["top1"], 4), "map5": round(v["map5"], 4)}
            for m, v in results.get("closed", {}).items()
        },
        "open": {
            m: {
                "map5": round(v["map5"], 4),
                "baks": round(v["baks"], 4),
                "baus": round(v["baus"], 4),
                "gmean": round(v["gmean"], 4),
            }
            for m, v in results.get("open", {}).items()
        },
    }
    write_text(
        out / "results.json",
        json.dumps({**figures, "seconds": seconds, "info": info, "extra": extra}, indent=2),
    )
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
