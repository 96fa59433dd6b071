"""What each setting changes on the quality benchmark: training settings on its closed set,
and fusion, local-matching and open-set settings on both protocols.

    python benchmarks/sweep_quality.py --variants benchmarks/sweeps/nyala.yaml \\
        [--data ../shared/datasets/nyala] [--crop cam] [--max-minutes 60]
    python benchmarks/sweep_quality.py --variants benchmarks/sweeps/nyala_fusion.yaml

The variants file is a list of {name, overrides: [key=value, ...], flank_classes: bool}
(a training variant), or of {name, bench: [bench_quality argument, ...], overrides: [...]}
(a benchmark variant).

A benchmark variant runs `bench_quality` whole (both protocols, every method it names)
with those arguments in `--bench-out` (default: `make bench-quality`'s own folder), so
the models, features and pair counts that `make bench-quality` left there are reused:
a variant that changes only fusion, local matching or open-set settings re-trains
nothing and costs the matching of pairs not seen before. Its row holds the headline
figures of `--bench-methods` and their variants (closed top-1 / MAP@5; open MAP@5 at the
MAP@5 point and BAKS, BAUS, gmean at the gmean point); its tables are in
<bench-out>/results-<name>.md.

A training variant:
Every variant trains `bench_quality`'s trained pipeline on the same closed-set gallery
(same import, seed and boxes) and scores top-1 and MAP@5 on the same queries, flanks
compared only with flanks, so rows differ by their settings alone. Each finished variant
is written to OUT/sweep.jsonl at once and skipped by a re-run (unless its settings, or
the config, data, seed or crop it ran on, changed: a row measured on yesterday's default
is not today's); `--max-minutes` stops starting new ones, so a sweep fits a time-boxed (GPU)
lease. `cost` is training epochs x pixels relative to the config's own
(configs/nyala.yaml: 1.0 = about 23 minutes on 2 CPU cores), to keep GPU-found settings
honest about what a 2-core CPU can afford.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# The benchmark's own plumbing (boxes cache, timer, the trained run per protocol); run as
# `python benchmarks/sweep_quality.py`, this script's folder is on the import path.
import bench_quality as bq
import torch
import yaml

from wildid.cache import fingerprint
from wildid.config import load_config
from wildid.evaluation.protocols import (
    Protocol,
    closed_scores,
    import_protocols,
    query_scores,
    rank,
)
from wildid.io import write_text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", required=True, help="YAML list of variants")
    p.add_argument("--data", default="../shared/datasets/nyala")
    p.add_argument("--group", default=r"^(\d+)_")
    p.add_argument("--side-regex", default=r"_(left|right)")
    p.add_argument("--config", default="configs/nyala.yaml")
    p.add_argument("--crop", choices=("cam", "whole"), default="cam")
    p.add_argument("--out", default="working/bench/sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--only", default="", help="comma-separated variant names to run")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        help="overrides for every variant that change speed, not results (train.num_workers=12)",
    )
    p.add_argument(
        "--bench-out",
        default="working/bench/quality",
        help="benchmark variants' folder (shared, so its trained models are reused)",
    )
    p.add_argument(
        "--bench-methods",
        default="trained,trained+local",
        help="methods whose figures a benchmark variant's row holds",
    )
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def cost(overrides: list[str], config_path: str) -> float:
    """Training work (epochs x pixels per photo) relative to the config's own; the photos
    are the same gallery in every variant."""
    base = load_config(config_path).train
    mine = load_config(config_path, overrides).train
    return (mine.epochs * mine.image_size**2) / (base.epochs * base.image_size**2)


def baseline(args: argparse.Namespace) -> str:
    """What every row of a sweep shares: the resolved config (defaults included, so an
    edited configs/nyala.yaml or base.yaml counts), the data and how it is split and cropped
    (`--set` is left out: it changes speed, not results)."""
    config = load_config(args.config).model_dump(mode="json")
    return fingerprint(config, args.data, args.group, args.side_regex, args.crop, args.seed)


def run_variant(variant: dict, protocol: Protocol, args: argparse.Namespace) -> dict:
    overrides = [str(o) for o in variant.get("overrides", [])]
    bench_args = argparse.Namespace(
        config=args.config,
        overrides=[*overrides, *args.set],
        crop=args.crop,
        seed=args.seed,
        flank_classes=bool(variant.get("flank_classes", False)),
    )
    timer = bq.Timer()
    start = time.perf_counter()
    features = bq.trained_features(
        protocol, bench_args, Path(args.out), timer, not args.no_progress
    )
    g = protocol.gallery
    figures = closed_scores(
        rank(query_scores(features, protocol), g["individual_id"].to_numpy()), protocol.truths
    )
    return {
        "name": variant["name"],
        "overrides": overrides,
        "flank_classes": bench_args.flank_classes,
        "top1": round(figures["top1"], 4),
        "map5": round(figures["map5"], 4),
        "cost": round(cost(overrides, args.config), 2),
        "train_s": round(sum(v for k, v in timer.seconds.items() if k.startswith("train")), 1),
        "total_s": round(time.perf_counter() - start, 1),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def run_bench_variant(variant: dict, args: argparse.Namespace) -> dict:
    """One `bench_quality` run with the variant's arguments in the shared `--bench-out`."""
    overrides = [str(o) for o in variant.get("overrides", [])]
    bench = [str(a) for a in variant.get("bench", [])]
    argv = [
        "--data",
        args.data,
        "--group",
        args.group,
        "--side-regex",
        args.side_regex,
        "--config",
        args.config,
        "--crop",
        args.crop,
        "--seed",
        str(args.seed),
        "--out",
        args.bench_out,
        "--tag",
        variant["name"],
        *(["--no-progress"] if args.no_progress else []),
        *bench,
        *overrides,
        *args.set,
    ]
    start = time.perf_counter()
    figures = bq.main(argv)
    wanted = [m for m in args.bench_methods.split(",") if m]
    keep = {
        protocol: {
            label: values
            for label, values in figures[protocol].items()
            if label.removesuffix(" [sighting]").split(" ")[0] in wanted
        }
        for protocol in ("closed", "open")
    }
    return {
        "name": variant["name"],
        "bench": bench,
        "overrides": overrides,
        "flank_classes": False,
        **keep,
        "cost": round(cost(overrides, args.config), 2),
        "total_s": round(time.perf_counter() - start, 1),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def _finished(variant: dict, done: dict[str, dict], base: str) -> bool:
    """Whether sweep.jsonl holds this variant with these very settings on this baseline (an
    edited variant under an old name, or any variant after the config changed, runs again)."""
    row = done.get(variant["name"])
    return (
        row is not None
        and row.get("baseline") == base
        and row["overrides"] == [str(o) for o in variant.get("overrides", [])]
        and row["flank_classes"] == bool(variant.get("flank_classes", False))
        and row.get("bench", []) == [str(a) for a in variant.get("bench", [])]
    )


def _print_row(r: dict) -> None:
    if "bench" not in r:
        print(
            f"{r['name']:28s} top1 {r['top1']:.3f}  map5 {r['map5']:.3f}  cost {r['cost']:.2f}"
            f"  train {r['train_s']:.0f} s"
        )
        return
    for label, c in r["closed"].items():
        o = r["open"].get(label, {})
        print(
            f"{r['name']:28s} {label:24s} closed top1 {c['top1']:.3f} map5 {c['map5']:.3f}"
            + (
                f" | open map5 {o['map5']:.3f} baks {o['baks']:.3f} baus {o['baus']:.3f}"
                f" gmean {o['gmean']:.3f}"
                if o
                else ""
            )
        )


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = yaml.safe_load(Path(args.variants).read_text())
    if args.only:
        wanted = set(args.only.split(","))
        variants = [v for v in variants if v["name"] in wanted]
    log = out / "sweep.jsonl"
    done = (
        {
            json.loads(line)["name"]: json.loads(line)
            for line in log.read_text().splitlines()
            if line
        }
        if log.is_file()
        else {}
    )
    base = baseline(args)
    protocol = None
    start = time.perf_counter()
    for variant in variants:
        if _finished(variant, done, base):
            continue
        if args.max_minutes and time.perf_counter() - start > 60 * args.max_minutes:
            print(f"time box reached: {variant['name']} and later variants not run", flush=True)
            break
        try:
            if "bench" in variant:
                row = run_bench_variant(variant, args)
            else:
                if protocol is None:
                    protocol = _closed_protocol(args, out)
                row = run_variant(variant, protocol, args)
        except Exception as error:  # one broken variant must not cost the rest of a lease
            print(f"variant {variant['name']} failed: {error!r}", flush=True)
            continue
        row["baseline"] = base
        done[row["name"]] = row
        write_text(log, "".join(json.dumps(r) + "\n" for r in done.values()))  # atomic
        print(json.dumps(row), flush=True)
    rows = [done[v["name"]] for v in variants if _finished(v, done, base)]
    for r in rows:
        _print_row(r)
    return rows


def _closed_protocol(args: argparse.Namespace, out: Path) -> Protocol:
    protocol = import_protocols(
        args.data, out / "data", args.group, args.seed, args.side_regex or None
    )["closed"]
    photos = bq.all_photos({"closed": protocol})
    bq.write_boxes(protocol, bq.animal_boxes(photos, out, args.crop, not args.no_progress))
    return protocol


if __name__ == "__main__":
    main()
