"""Warm identify of one photo, and the start-up time of `wildid identify` (issue 12).

Galleries:
  happywhale  a Happywhale-sized gallery: 51,033 random unit 512-d embeddings of 15,587
              individuals, in a package whose model is MobileNetV2 at 128 px trained one
              epoch on a synthetic mini-competition with fullbody boxes, so a new photo
              pays the CAM crop (EfficientNet-Lite0 activation map) and the model.
  nyala       a package of the nyala quality benchmark's closed-protocol `trained` model
              (bench_quality.py's run in `--nyala-quality`, default working/bench/quality,
              the folder `make bench-quality` writes), when ../shared/datasets/nyala exists
              and that run is trained (or `--train-nyala`: trains it the benchmark's way,
              about 25 min on 2 cores); else skipped with the reason.

Nyala agreement (issue 12: identify reproduces the benchmark's top-1): every closed-set
query photo (its original file, whose name gives the flank) is identified against the
package, and its top-1 individual and score are compared with the benchmark's own ranking
of the same photo (`protocols.rank` of `query_scores` over the benchmark's float32
embeddings: CAM box from boxes_cam.csv, same-flank pairs only). Twice: with the package as
`wildid package` builds it (gallery and query rounded to the run's float16), and with the
run's float32 embeddings packaged (`embed.dtype=float32`), which isolates the rounding.
Also reported: how many queries get another CAM box from identify than the benchmark's,
and the largest 1 - cosine between identify's and the benchmark's query embeddings.

Per gallery, in a fresh process: `warm_s` is the median of `--repeats` identify calls of
one photo after one warm-up call (crop + model + search + calibration), `startup_s` the Identifier's
construction (unpacking the archive, model load, catalogue), `cli_s` the wall time of a whole
`wildid identify PACKAGE PHOTO` process (interpreter and imports included).

    python benchmarks/bench_identify.py [--work DIR] [--repeats 5]
The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from wildid import pipeline
from wildid.config import load_config
from wildid.gallery.identify import Identifier
from wildid.gallery.package import MANIFEST, PHOTO_COLUMNS, build_package, write_archive
from wildid.synth.render import SynthSpec, synthesize

GALLERY, INDIVIDUALS, DIM = 51_033, 15_587, 512
NYALA = Path("../shared/datasets/nyala")


def small_run(work: Path) -> tuple[Path, Path]:
    """A MobileNetV2 run at 128 px, one epoch, fullbody boxes: (run folder, a test photo)."""
    comp = work / "comp"
    if not (comp / "train.csv").is_file():
        synthesize(comp, SynthSpec(individuals=20, size=256, seed=0), progress=False)
    config = load_config(
        "mini",
        [
            f"data={comp}",
            f"working={work / 'working'}",
            f"submissions={work / 'subs'}",
            "name=bench-identify",
            "train.epochs=1",
            "baseline=false",
            "train.num_workers=0",
        ],
    )
    pipeline.run(config, progress=False)
    return work / "working" / config.name, sorted((comp / "test_images").iterdir())[0]


def happywhale_sized(archive: Path, out: Path, seed: int = 0) -> Path:
    """`archive` with its gallery replaced by 51,033 random rows (one shared thumbnail)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((GALLERY, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    extra = rng.integers(0, INDIVIDUALS, GALLERY - INDIVIDUALS)  # every individual once+
    ids = rng.permutation(np.concatenate([np.arange(INDIVIDUALS), extra]))
    with zipfile.ZipFile(archive) as z:
        members = {n: z.read(n) for n in z.namelist() if n != MANIFEST}
    thumb = members["gallery/thumbs/0.jpg"]
    members = {n: b for n, b in members.items() if not n.startswith("gallery/thumbs/")}
    members["gallery/thumbs/0.jpg"] = thumb
    table = pd.DataFrame(
        {
            "id": np.arange(GALLERY),
            "image": [f"{i:06d}.jpg" for i in range(GALLERY)],
            "individual_id": [f"ind{i:05d}" for i in ids],
            "sighting": "",
            "side": "",
            "source": "",
            "sha256": [f"{i:064x}" for i in range(GALLERY)],
            "thumbnail": "gallery/thumbs/0.jpg",
        }
    )[PHOTO_COLUMNS]
    for name, array in (
        ("embeddings", vectors.astype(np.float16)),
        ("rows", table["id"].to_numpy()),
    ):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        members[f"gallery/{name}.npy"] = buffer.getvalue()
    members["gallery/photos.csv"] = table.to_csv(index=False, lineterminator="\n").encode()
    meta = json.loads(members["package.json"])
    meta.update(photos=GALLERY, rows=GALLERY, individuals=int(table["individual_id"].nunique()))
    members["package.json"] = json.dumps(meta, indent=2).encode()
    return write_archive(members, out)


def measure(archive: Path, photo: Path, repeats: int) -> dict:
    target = archive.with_suffix("")
    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    identifier = Identifier(archive)
    startup = time.perf_counter() - start
    identifier.identify([photo])  # warm-up: first call pays lazy loads (CAM model, gallery)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        identifier.identify([photo])
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "wildid.cli", "identify", str(target), str(photo)],
        check=True,
        capture_output=True,
    )
    cli = time.perf_counter() - start
    return {
        "gallery_rows": int(len(identifier.index().vectors)),
        "individuals": int(len(identifier.index().individuals)),
        "crop_mode": identifier.package.meta["crop_mode"],
        "warm_s": round(statistics.median(times), 4),
        "warm_max_s": round(max(times), 4),
        "startup_s": round(startup, 2),
        "cli_s": round(cli, 2),
    }


def fresh(archive: Path, photo: Path, repeats: int) -> dict:
    """`measure` in a process of its own."""
    command = [sys.executable, __file__, "--measure", str(archive), str(photo)]
    done = subprocess.run([*command, "--repeats", str(repeats)], check=True, capture_output=True)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def nyala_agreement(
    quality: Path, work: Path, train: bool, quality_args: Sequence[str] = ()
) -> tuple[dict, Path | None, Path | None]:
    """The closed-protocol comparison (module docstring): (figures, package, a query photo),
    or (a skip, None, None). `quality_args`: more bench_quality.py arguments (--data,
    config overrides), as the run was made with."""
    import bench_quality as bq
    import torch

    from wildid.crop.boxes import expand_box
    from wildid.data.competition import load_competition
    from wildid.evaluation.protocols import calibration, query_scores, rank, training_exclusion
    from wildid.gallery.embedder import read_photo
    from wildid.infer.embed import Embeddings, write_embeddings
    from wildid.layout import RunLayout

    qargs = bq.parse_args(
        ["--protocols", "closed", "--out", str(quality), "--no-progress", *quality_args]
    )
    out = Path(qargs.out)
    protocol = bq.import_protocols(
        qargs.data, out / "data", qargs.group, qargs.seed, qargs.side_regex or None
    )["closed"]
    config = bq.pipeline_config(protocol, qargs, out)
    layout = RunLayout.of(config)
    last = layout.fold(0) / "last.pt"
    # epochs done and planned (train.budget_minutes may have planned fewer than the config)
    state = torch.load(last, map_location="cpu", weights_only=True) if last.is_file() else {}
    epochs, planned = int(state.get("epoch", 0)), int(state.get("epochs", config.train.epochs))
    if epochs < planned and not train:  # absent, or still training elsewhere
        reason = (
            f"no trained closed-protocol run in {layout.root} ({epochs} of {planned} "
            "epochs; `make bench-quality`, or --train-nyala here: about 30 min on 2 cores)"
        )
        return {"skipped": reason}, None, None
    # The benchmark's steps for its closed `trained` method, in its order (bench_quality.main)
    torch.manual_seed(qargs.seed)
    timer = bq.Timer()
    boxes = bq.animal_boxes(bq.all_photos({"closed": protocol}), out, qargs.crop, False)
    bq.write_boxes(protocol, boxes)
    exclusion = training_exclusion(protocol, calibration(protocol.gallery, qargs.calibration))
    features = bq.trained_features(protocol, qargs, out, timer, False, exclusion)
    g, q = protocol.gallery, protocol.queries
    reference = rank(query_scores(features, protocol), g["individual_id"].to_numpy())
    ref_top = [labels[0] if labels else None for labels in reference.labels]
    ref_score = reference.scores[:, 0].astype(np.float64)
    # The run folder gets the embeddings the benchmark computed (it keeps them in memory)
    competition = load_competition(protocol.root, check_images=False)
    tables = {"train": competition.train, "test": competition.test}
    write_embeddings(
        layout.embeddings(0),
        Embeddings(
            np.stack([features[i] for i in tables["train"]["image"]]),
            np.stack([features[i] for i in tables["test"]["image"]]),
        ),
        tables["train"]["image"],
        tables["test"]["image"],
        "float32",
    )
    photos = [str(Path(qargs.data) / source) for source in q["source"]]
    figures: dict = {
        "run": str(layout.root),
        "queries": len(q),
        "gallery_photos": len(g),
        "benchmark_top1": round(float(np.mean(np.array(ref_top) == q["truth"].to_numpy())), 4),
        **{f"{k}_s": round(v, 1) for k, v in timer.seconds.items()},
    }
    package = None
    for dtype in ("float16", "float32"):
        built = load_config(layout.config, [f"embed.dtype={dtype}"])
        archive = work / ("nyala.zip" if dtype == "float16" else "nyala_float32.zip")
        shutil.rmtree(archive.with_suffix(""), ignore_errors=True)
        build_package(layout.root, archive, config=built, side_regex=qargs.side_regex or None)
        identifier = Identifier(archive)
        results = []
        for start in range(0, len(photos), 32):
            results += identifier.identify(photos[start : start + 32], k=1)
        top = [r.candidates[0].individual_id if r.candidates else None for r in results]
        score = np.array([r.candidates[0].score if r.candidates else -np.inf for r in results])
        agree = np.array(top, dtype=object) == np.array(ref_top, dtype=object)
        both = np.isfinite(score) & np.isfinite(ref_score)
        figures[dtype] = {
            "top1_agreement": round(float(agree.mean()), 4),
            "max_abs_score_diff": float(np.max(np.abs(score[both] - ref_score[both]))),
            "identify_top1": round(float(np.mean(np.array(top) == q["truth"].to_numpy())), 4),
            "differing": [
                {
                    "photo": photos[i],
                    "benchmark": [ref_top[i], round(float(ref_score[i]), 6)],
                    "identify": [top[i], round(float(score[i]), 6)],
                    "benchmark_second": round(float(reference.scores[i, 1]), 6),
                }
                for i in np.flatnonzero(~agree)
            ],
        }
        print(f"nyala {dtype}: {figures[dtype]}", flush=True)
        if dtype == "float16":
            package = archive
        else:  # the crop and the query embedding, photo by photo, against the benchmark's
            mismatched, worst = 0, 0.0
            for start in range(0, len(photos), 32):
                chunk = photos[start : start + 32]
                images = q["image"].iloc[start : start + 32]
                for photo, image in zip(chunk, images, strict=True):
                    rgb = read_photo(photo)
                    h, w = rgb.shape[:2]
                    want = expand_box(bq.box_of(boxes, image), config.crop.margin, w, h)
                    mismatched += tuple(identifier.embedder.box(rgb)) != tuple(want)
                vectors = identifier.embedder.embed(chunk).vectors
                cosines = np.sum(vectors * np.stack([features[i] for i in images]), axis=1)
                worst = max(worst, float(np.max(1.0 - cosines)))
            figures["cam_box_mismatches"] = int(mismatched)
            figures["max_query_embedding_1_minus_cos"] = worst
    figures["local"] = fused_identify(layout.root, work, qargs, photos, q["truth"].to_numpy())
    return figures, package, Path(photos[0])


def fused_identify(
    run: Path, work: Path, qargs: argparse.Namespace, photos: list[str], truths: np.ndarray
) -> dict:
    """The same queries against a package with keypoints (`wildid package --local`):
    identify's top-1 when it ranks by the calibrated global + local fusion, the share of
    these (all known) queries it calls new at the package's gmean point, and the costs."""
    started = time.perf_counter()
    archive = work / "nyala_local.zip"
    shutil.rmtree(archive.with_suffix(""), ignore_errors=True)
    build_package(run, archive, side_regex=qargs.side_regex or None, local=True)
    package_s = time.perf_counter() - started
    identifier = Identifier(archive)
    started = time.perf_counter()
    results = []
    for start in range(0, len(photos), 32):
        results += identifier.identify(photos[start : start + 32], k=5)
    identify_s = time.perf_counter() - started
    top = np.array([r.candidates[0].individual_id if r.candidates else None for r in results])
    fusion = identifier.fusion
    figures = {
        "identify_top1": round(float(np.mean(top == truths)), 4),
        "identify_top5": round(
            float(
                np.mean(
                    [
                        t in [c.individual_id for c in r.candidates]
                        for r, t in zip(results, truths, strict=True)
                    ]
                )
            ),
            4,
        ),
        "called_new": round(float(np.mean([r.new_individual for r in results])), 4),
        "known_and_right": round(
            float(
                np.mean(
                    [
                        (not r.new_individual) and t == x
                        for r, t, x in zip(results, truths, top, strict=True)
                    ]
                )
            ),
            4,
        ),
        "fusion": {"source": fusion.source, "rows": fusion.rows, "weights": list(fusion.weights)},
        "package_s": round(package_s, 1),
        "package_bytes": archive.stat().st_size,
        "identify_s_per_photo": round(identify_s / len(photos), 3),
    }
    print(f"nyala local: {figures}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("working/bench/identify"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--nyala-quality",
        type=Path,
        default=Path("working/bench/quality"),
        help="bench_quality.py's --out: its closed-protocol trained run is packaged",
    )
    parser.add_argument(
        "--train-nyala",
        action="store_true",
        help="train that run when it is missing (the benchmark's way, ~25 min on 2 cores)",
    )
    parser.add_argument("--measure", nargs=2, type=Path, metavar=("PACKAGE", "PHOTO"))
    args = parser.parse_args()
    if args.measure:  # in a fresh process: training in this one would skew the timings
        print(json.dumps(measure(*args.measure, args.repeats)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    figures: dict = {}
    run, photo = small_run(args.work)
    small = build_package(run, args.work / "small.zip")
    big = happywhale_sized(small, args.work / "happywhale.zip")
    figures["happywhale"] = fresh(big, photo, args.repeats)
    print(f"happywhale-sized: {figures['happywhale']}")
    if not NYALA.is_dir():
        figures["nyala"] = {"skipped": f"{NYALA} does not exist"}
    else:
        figures["nyala"], nyala, query = nyala_agreement(
            args.nyala_quality, args.work, args.train_nyala
        )
        if nyala is not None:
            figures["nyala"]["speed"] = fresh(nyala, query, args.repeats)
    print(f"nyala: {figures['nyala']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
