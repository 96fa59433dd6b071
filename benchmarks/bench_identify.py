"""Warm identify of one photo, and the start-up time of `wildid identify` (issue 12).

Galleries:
  happywhale  a Happywhale-sized gallery: 51,033 random unit 512-d embeddings of 15,587
              individuals, in a package whose model is MobileNetV2 at 128 px trained one
              epoch on a synthetic mini-competition with fullbody boxes, so a new photo
              pays the CAM crop (EfficientNet-Lite0 activation map) and the model.
  nyala       a package of a trained nyala run (`--nyala-run`, default working/nyala, made
              by `wildid run nyala`), when ../shared/datasets/nyala exists; else skipped
              with the reason.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("working/bench/identify"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nyala-run", type=Path, default=Path("working/nyala"))
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
    elif not (args.nyala_run / "embeddings").is_dir():
        figures["nyala"] = {
            "skipped": f"no trained nyala run in {args.nyala_run} (train one: `wildid import "
            f"{NYALA} input/nyala --group '^(\\d+)_'`, `wildid boxes input/nyala`, then "
            "`wildid run nyala crop.boxes=[...]`; about 25 min on 2 cores)"
        }
    else:
        nyala = build_package(args.nyala_run, args.work / "nyala.zip")
        config = load_config(args.nyala_run / "config.yaml")
        query = sorted((Path(config.data) / "test_images").iterdir())[0]
        figures["nyala"] = fresh(nyala, query, args.repeats)
    print(f"nyala: {figures['nyala']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
