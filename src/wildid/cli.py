"""The `wildid` command line: one sub-command per stage, and `run` for all of them.

These forms are a contract that scripts outside the project rely on; extend, don't break:
    wildid synth OUT [--seed N] [--individuals N] [--size PX]
    wildid import SRC OUT [--group REGEX] [--new-fraction F] [--seed N]
                      [--follow-links] [--allow-duplicates]
    wildid check DATA [--out FILE.csv] [--working DIR] [--max-pixels N]   (exit 2: bad photos)
    wildid boxes DIR [--out FILE] [--working DIR] [--force]   (CAM animal boxes)
    wildid run CONFIG [key=value ...]          (data=DIR chooses the competition folder)
    wildid report RUN [--reference RUN] [--working DIR]   (RUN: working/<run>, or a run name)
    wildid compare RUN RUN... [--out FILE.csv] [--working DIR]
    wildid validate SUBMISSION --data DIR      (exit 0 when valid)
    wildid score SUBMISSION SOLUTION           (last line: MAP@5 <value>)
    wildid ensemble CONFIG [key=value ...]     (ensemble.members=[runA,runB] ...)
    wildid submit [SUBMISSION] [--data DIR] [-m MESSAGE]   (default: the only submissions/*.csv)
    wildid detect train CONFIG [key=value ...] (fullbody/backfin YOLO detector on boxes.csv)
    wildid detect crop CONFIG [key=value ...]  (detect every photo, crop what was found)
    wildid kaggle bundle OUT [--user U] [--packages P ...] [--notebooks DIR]
                         [--weights-dataset SLUG ...]   (code dataset + kernel folders)
    wildid kaggle simulate OUT --competition DIR [--config C] [--override K=V ...]
    wildid kaggle push OUT [-m MESSAGE] [--no-wait]    (datasets, then kernels in order)
    wildid kaggle weights RUN_DIR OUT [--user U]       (a run's checkpoints as a dataset)
    wildid kaggle imagenet-weights OUT --model NAME ... [--cache DIR] [--user U]
    wildid package RUN OUT [--working DIR]     (RUN: working/<run>, or a run name)
    wildid package --inspect PACKAGE
    wildid identify PACKAGE PHOTO... [--sighting] [-k 5] [--out FILE.csv|.json] [--sheet DIR]
                    [--operating-point gmean|map5]
                    [--side left|right]
    wildid enroll PACKAGE PHOTO... (--as ID | --new NAME) [--by WHO]
    wildid enroll PACKAGE --undo ENTRY
    wildid serve PACKAGE [--port N] [--host 127.0.0.1]   (the review web app, Gradio)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

import wildid  # noqa: F401  (sets the offline switches before third-party imports)
from wildid.errors import WildidError


class _Commands(TyperGroup):
    """Every sub-command's user errors (wildid.errors.WildidError) become one line, status 2."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 (click's signature)
        try:
            return super().invoke(ctx)
        except WildidError as err:
            _fail(err)


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Identify individual animals from photographs.",
)

Overrides = Annotated[list[str] | None, typer.Argument(help="key=value overrides")]
ConfigArg = Annotated[Path, typer.Argument(help="YAML config, e.g. configs/mini.yaml")]


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _config(path: Path, overrides: list[str] | None):
    from wildid.config import load_config

    return load_config(path, overrides or [])


@app.command()
def synth(
    out: Path,
    seed: int = 0,
    individuals: int = 150,
    size: int = 256,
    preview: Annotated[Path | None, typer.Option(help="also save a PNG grid of samples")] = None,
) -> None:
    """Write a synthetic whale-and-dolphin mini-competition into OUT."""
    from wildid.synth.render import SynthSpec, preview_grid, synthesize

    summary = synthesize(out, SynthSpec(individuals=individuals, size=size, seed=seed))
    typer.echo(
        f"{summary.root}: {summary.train_images} train, {summary.test_images} test "
        f"({summary.new_test_images} of new individuals), "
        f"{summary.individuals} individuals"
    )
    if preview:
        typer.echo(f"preview: {preview_grid(out, preview)}")


@app.command("import")
def import_(
    src: Path,
    out: Path,
    group: Annotated[
        str | None, typer.Option(help="regex for the sighting id in file names")
    ] = None,
    new_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    species: str | None = None,
    link: str = "copy",
    follow_links: Annotated[
        bool, typer.Option(help="follow symbolic links in SRC (default: skip and count them)")
    ] = False,
    allow_duplicates: Annotated[
        bool, typer.Option(help="import the same bytes under two individuals (default: error)")
    ] = False,
) -> None:
    """Import a folder-per-individual catalogue SRC into the competition layout at OUT."""
    from wildid.data.catalogue import ImportSpec, import_catalogue
    from wildid.data.competition import DataError

    spec = ImportSpec(
        group=group,
        new_fraction=new_fraction,
        test_fraction=test_fraction,
        seed=seed,
        species=species,
        link=link,
        follow_links=follow_links,
        duplicates="keep" if allow_duplicates else "error",
    )
    try:
        summary = import_catalogue(src, out, spec)
    except DataError as err:
        _fail(err)
    typer.echo(
        f"{summary.root}: {summary.individuals} individuals ({summary.new_individuals} "
        f"held out as new), {summary.train_images} train, {summary.test_images} test"
    )


@app.command()
def boxes(
    data: Path,
    out: Annotated[
        Path | None,
        typer.Option(help="box file to write (default: WORKING/boxes/<DATA folder name>.csv)"),
    ] = None,
    working: Annotated[Path, typer.Option(help="the config's working folder (`working:`)")] = Path(
        "working"
    ),
    force: Annotated[bool, typer.Option(help="replace an existing box file")] = False,
) -> None:
    """Write one animal box per photo of DATA, from the shipped ImageNet classifier's
    activation map, for catalogues that come without boxes. DATA is only read (it may be
    read-only, e.g. /kaggle/input/...): the boxes go to the working folder, and the
    `crop.boxes` setting printed last makes the crop stage use them (what `make
    bench-quality` does on nyala)."""
    from wildid.crop.saliency import cam_boxes
    from wildid.data.competition import DataError, load_competition
    from wildid.io import write_csv

    target = out if out is not None else working / "boxes" / f"{data.resolve().name}.csv"
    if target.resolve().is_relative_to(data.resolve()):
        _fail(
            DataError(
                f"{target}: inside the competition folder {data}, which is only read; "
                "write the boxes elsewhere (--out FILE, or the default under --working)."
            )
        )
    if target.exists() and not force:
        _fail(
            DataError(
                f"{target} exists (it may hold hand-made or ground-truth boxes); "
                "pass --force to replace it."
            )
        )
    try:
        competition = load_competition(data)
    except DataError as err:
        _fail(err)
    tables = [
        (split, t["image"].tolist())
        for split, t in (("train", competition.train), ("test", competition.test))
    ]
    images = [image for _, names in tables for image in names]
    paths = [competition.image_path(split, image) for split, names in tables for image in names]
    table = cam_boxes(images, paths)
    write_csv(table.drop(columns="area"), target)
    typer.echo(f"{target}: {len(table)} boxes")
    typer.echo(f"crop with them: 'crop.boxes=[{{path: {target}, kind: fullbody}}]'")


@app.command()
def check(
    data: Path,
    out: Annotated[
        Path | None, typer.Option(help="also write the problem table to this CSV")
    ] = None,
    working: Annotated[
        Path, typer.Option(help="the config's working folder (`working:`): the cache")
    ] = Path("working"),
    max_pixels: Annotated[
        int, typer.Option(help="refuse photos whose header claims more pixels")
    ] = 50_000_000,
    workers: Annotated[int | None, typer.Option(help="reading threads (default: up to 4)")] = None,
) -> None:
    """Read every photo of DATA once and list every problem (unreadable, truncated, too
    large, the same bytes under two individuals, odd channels); exit 2 when one would
    poison training. Cached per photo under WORKING/check/; DATA is only read."""
    from wildid.data.check import CheckError, check_folder
    from wildid.data.competition import DataError
    from wildid.io import write_csv

    if out is not None and out.resolve().is_relative_to(data.resolve()):
        _fail(DataError(f"{out}: inside the competition folder {data}, which is only read."))
    report = check_folder(data, working, max_pixels, workers, progress=False)
    typer.echo(report.table())
    if out is not None:
        write_csv(report.problems, out)
    typer.echo(report.summary())
    errors = report.errors
    if not errors.empty:
        first = errors.iloc[0]
        _fail(
            CheckError(
                f"{len(errors)} photo(s) would poison training, first {first['source']}: "
                f"{first['problem']}: {first['detail']}. Replace them, or run with "
                "check.on_bad=skip to leave bad train photos out."
            )
        )


@app.command()
def run(config: ConfigArg, overrides: Overrides = None) -> None:
    """Run every stage: crop, train, embed, retrieve, new_individual threshold, submission."""
    from wildid.config import ConfigError
    from wildid.data.competition import DataError
    from wildid.evaluation.report import print_run
    from wildid.pipeline import run as run_pipeline

    try:
        cfg = _config(config, overrides)
        result = run_pipeline(cfg)
    except (ConfigError, DataError) as err:
        _fail(err)
    print_run(result)


RunArg = Annotated[str, typer.Argument(help="run folder (working/<run>) or a run name")]
WorkingOption = Annotated[Path, typer.Option(help="where run names are looked up")]


@app.command()
def report(
    run: RunArg,
    reference: Annotated[
        str | None, typer.Option(help="a run to compare with, figure by figure (folder or name)")
    ] = None,
    working: WorkingOption = Path("working"),
) -> None:
    """Write RUN's report: report/index.html (self-contained), figures.json, the PNGs."""
    from wildid.layout import RunLayout
    from wildid.report import write_report

    layout = RunLayout.find(run, working)
    other = RunLayout.find(reference, working) if reference is not None else None
    made = write_report(layout, other)
    typer.echo(f"figures: {made.figures}")
    typer.echo(f"report: {made.index}")


@app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="run folders or run names (two or more)")],
    out: Annotated[
        Path | None,
        typer.Option(help="CSV to write (default: WORKING/compare/<run>_vs_<run>.csv)"),
    ] = None,
    working: WorkingOption = Path("working"),
) -> None:
    """One table of the runs' figures and the settings that differ (terminal and CSV)."""
    from rich.console import Console

    from wildid.layout import RunLayout
    from wildid.report.compare import compare_runs, rich_table, write_comparison

    layouts = [RunLayout.find(r, working) for r in runs]
    comparison = compare_runs(layouts)
    Console().print(rich_table(comparison))
    target = out or layouts[0].comparison([layout.name for layout in layouts[1:]])
    typer.echo(f"table: {write_comparison(comparison, target)}")


@app.command()
def validate(
    submission: Path,
    data: Annotated[Path, typer.Option(help="competition folder")],
) -> None:
    """Check a submission file against a competition's test images and train ids."""
    from wildid.data.competition import DataError, load_competition
    from wildid.evaluation.submission import SubmissionError, validate_against_competition

    try:
        validate_against_competition(submission, load_competition(data, check_images=False))
    except (DataError, SubmissionError, FileNotFoundError) as err:
        _fail(err)
    typer.echo(f"{submission}: valid")


@app.command()
def score(submission: Path, solution: Path) -> None:
    """Score a submission against solution.csv with Kaggle's MAP@5."""
    from wildid.evaluation.metrics import ScoreError, score_breakdown

    try:
        table = score_breakdown(submission, solution)
    except (ScoreError, FileNotFoundError) as err:
        _fail(err)
    typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    value = float(table.loc[table["species"] == "all", "map5"].iloc[0])
    typer.echo(f"MAP@5 {value:.6f}")


@app.command()
def ensemble(config: ConfigArg, overrides: Overrides = None) -> None:
    """Combine stored embeddings of several runs/folds, tune the threshold, write, score."""
    from wildid.config import ConfigError
    from wildid.data.competition import DataError
    from wildid.evaluation.report import print_run
    from wildid.pipeline import RunResult
    from wildid.pipeline.ensemble import EnsembleError, run_ensemble

    try:
        result = run_ensemble(_config(config, overrides))
    except (ConfigError, DataError, EnsembleError, FileNotFoundError) as err:
        _fail(err)
    print_run(RunResult(result, None, {}))


@app.command()
def submit(
    submission: Annotated[
        Path | None,
        typer.Argument(
            help="the CSV to submit, e.g. submissions/<run>.csv (default: the "
            "only CSV in submissions/)"
        ),
    ] = None,
    message: Annotated[
        str, typer.Option("--message", "-m", help="submission description")
    ] = "wildid",
    data: Annotated[
        Path | None, typer.Option(help="competition folder to validate against")
    ] = None,
    competition: str = "happy-whale-and-dolphin",
) -> None:
    """Validate SUBMISSION, then upload it with `kaggle competitions submit`."""
    from wildid.data.competition import DataError
    from wildid.kaggle import KaggleError
    from wildid.kaggle import submit as kaggle_submit

    if submission is None:
        found = sorted(Path("submissions").glob("*.csv"))
        if len(found) != 1:
            _fail(
                KaggleError(
                    f"submissions/ holds {len(found)} CSV files "
                    f"({', '.join(p.name for p in found) or 'none'}); name the one "
                    "to upload: wildid submit submissions/<run>.csv"
                )
            )
        submission = found[0]
    try:
        output = kaggle_submit(submission, message, competition, data)
    except (KaggleError, DataError) as err:
        _fail(err)
    typer.echo(output or f"{submission}: submitted to {competition}")


def _stage(name: str):
    """A stage sub-command: loads the config, runs the stages before it (cached)."""

    def command(config: ConfigArg, overrides: Overrides = None) -> None:
        from wildid import pipeline
        from wildid.layout import RunLayout

        cfg = _config(config, overrides)
        competition, split = pipeline.prepare(cfg)
        if name == "prepare":
            typer.echo(
                f"{cfg.data}: {len(competition.train)} train, {len(competition.test)} "
                f"test; split in {RunLayout.of(cfg).split}"
            )
            return
        crops = pipeline.crop(cfg, competition)
        if name == "crop":
            typer.echo(f"crops in {crops.root}")
            return
        for best in pipeline.train(cfg, crops, split):
            typer.echo(f"best checkpoint: {best}")

    command.__doc__ = {
        "prepare": "Validate the competition folder and write the validation split.",
        "crop": "Crop every photo (boxes.csv, or whole images) into working/crops/.",
        "train": "Train the embedding model (resumes from its last checkpoint).",
    }[name]
    return command


for _name in ("prepare", "crop"):
    app.command(_name)(_stage(_name))


@app.command("train")
def train(
    config: ConfigArg,
    overrides: Overrides = None,
    nproc: Annotated[int, typer.Option(help="processes (GPUs) for DDP, launched by torchrun")] = 1,
) -> None:
    """Train the embedding model (resumes from its last checkpoint)."""
    if nproc <= 1:
        _stage("train")(config, overrides)
        return
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "wildid.train.ddp",
        str(config),
        *(overrides or []),
    ]
    raise typer.Exit(subprocess.call(command))


detect_app = typer.Typer(
    no_args_is_help=True, help="Detect the full body and back fin with YOLO, and crop them."
)
app.add_typer(detect_app, name="detect")


@detect_app.command("train")
def detect_train(config: ConfigArg, overrides: Overrides = None) -> None:
    """Train the detector on the competition's boxes.csv; print mAP50 per class."""
    from wildid.config import ConfigError
    from wildid.crop.detector import train
    from wildid.data.competition import DataError, load_competition

    try:
        cfg = _config(config, overrides)
        detector = train(cfg, load_competition(cfg.data))
    except (ConfigError, DataError, FileNotFoundError) as err:
        _fail(err)
    typer.echo(f"weights: {detector.weights}")
    for key in ("map50_fullbody", "map50_backfin", "map50", "train_seconds"):
        typer.echo(f"{key} {detector.metrics.get(key)}")


@detect_app.command("crop")
def detect_crop(config: ConfigArg, overrides: Overrides = None) -> None:
    """Detect every train and test photo (training first if needed) and crop per kind."""
    from wildid.config import ConfigError
    from wildid.crop.detector import crop
    from wildid.data.competition import DataError, load_competition

    try:
        cfg = _config(config, overrides)
        crops = crop(cfg, load_competition(cfg.data))
    except (ConfigError, DataError, FileNotFoundError) as err:
        _fail(err)
    fallback = crops.table.groupby("kind")["source"].apply(lambda s: int((s == "fallback").sum()))
    typer.echo(f"crops in {crops.root}; whole-photo fallbacks per kind: {fallback.to_dict()}")


kaggle_app = typer.Typer(
    no_args_is_help=True,
    help="Run wildid as Kaggle notebooks: bundle, weights datasets, push.",
)
app.add_typer(kaggle_app, name="kaggle")


@kaggle_app.command("bundle")
def kaggle_bundle(
    out: Annotated[Path, typer.Argument(help="folder for datasets/ and kernels/")],
    user: Annotated[
        str | None, typer.Option(help="Kaggle user name (default: KAGGLE_USERNAME, kaggle.json)")
    ] = None,
    packages: Annotated[
        list[str] | None,
        typer.Option(help="dependency wheels to bundle (default: what Kaggle's image lacks)"),
    ] = None,
    notebooks: Annotated[
        Path | None, typer.Option(help="folder of 01_data.ipynb ... 06_submit.ipynb")
    ] = None,
    weights_dataset: Annotated[
        list[str] | None,
        typer.Option("--weights-dataset", help="a dataset SLUG every kernel attaches"),
    ] = None,
) -> None:
    """Write the code dataset (wheels) and one kernel folder per notebook under OUT."""
    from wildid.kaggle.bundle import KAGGLE_MISSING, bundle

    made = bundle(
        out,
        user,
        KAGGLE_MISSING if packages is None else [p for p in packages if p],  # '' = none
        notebooks,
        weights_dataset or (),
    )
    typer.echo(f"dataset {made.dataset}: {', '.join(w.name for w in made.wheels)}")
    for kernel in made.kernels:
        typer.echo(f"kernel {kernel}")
    typer.echo(f"upload: wildid kaggle push {out}")


@kaggle_app.command("simulate")
def kaggle_simulate(
    out: Annotated[Path, typer.Argument(help="a new folder for the bundle and the session")],
    competition: Annotated[
        Path, typer.Option(help="competition folder (train.csv, images, sample_submission.csv)")
    ],
    config: Annotated[str, typer.Option(help="config the kernels run (their CONFIG)")] = "mini",
    override: Annotated[
        list[str] | None, typer.Option(help="key=value for the kernels' OVERRIDES (repeat)")
    ] = None,
    packages: Annotated[
        list[str] | None, typer.Option(help="dependency wheels to bundle (default: as bundle)")
    ] = None,
    timeout: Annotated[int, typer.Option(help="seconds a notebook cell may run")] = 900,
) -> None:
    """Rehearse the kernels as Kaggle runs them: bundle, then each notebook in its own
    offline kernel with read-only inputs; check that nothing retrains and the submission."""
    from wildid.kaggle.simulate import rehearse

    sim, submission = rehearse(
        out,
        competition,
        config,
        override or (),
        None if packages is None else [p for p in packages if p],
        timeout,
    )
    typer.echo(f"simulated /kaggle: {sim.root} ({'; '.join(sim.isolation)})")
    for kernel in sim.kernels:
        typer.echo(f"  {kernel.slug:<20} {kernel.seconds:>7.1f} s  {len(kernel.written)} files")
    typer.echo(f"submission {submission}: valid")
    summary = {k.slug: k.seconds for k in sim.kernels}
    typer.echo(json.dumps({"kernels": summary, "submission": str(submission)}))


@kaggle_app.command("push")
def kaggle_push(
    out: Annotated[Path, typer.Argument(help="a folder written by `wildid kaggle bundle`")],
    message: Annotated[str, typer.Option("--message", "-m", help="dataset version notes")] = (
        "wildid bundle"
    ),
    wait: Annotated[
        bool, typer.Option(help="wait for each kernel a later one reads to complete")
    ] = True,
) -> None:
    """Push OUT's datasets (create or new version), then its kernels in order."""
    from wildid.kaggle.push import push

    for line in push(out, message, wait=wait):
        typer.echo(line)


@kaggle_app.command("weights")
def kaggle_weights(
    run_dir: Annotated[Path, typer.Argument(help="a trained run, e.g. working/<run>")],
    out: Annotated[Path, typer.Argument(help="the dataset folder to write")],
    user: Annotated[str | None, typer.Option(help="Kaggle user name")] = None,
    slug: Annotated[str | None, typer.Option(help="dataset slug")] = None,
) -> None:
    """A Kaggle dataset folder of RUN_DIR's checkpoints (models/fold*/best.pt)."""
    from wildid.kaggle.bundle import resolve_user
    from wildid.kaggle.weights import weights_dataset

    made = weights_dataset(run_dir, out, resolve_user(user), slug)
    typer.echo(f"{made.root}: dataset {made.slug}, {len(made.files)} files")


@kaggle_app.command("imagenet-weights")
def kaggle_imagenet_weights(
    out: Annotated[Path, typer.Argument(help="the dataset folder to write")],
    model: Annotated[list[str], typer.Option("--model", help="timm backbone name")],
    cache: Annotated[
        Path | None, typer.Option(help="Hugging Face hub cache (default: HF_HOME/hub)")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Kaggle user name")] = None,
) -> None:
    """A Kaggle dataset of timm ImageNet weights from the local cache (model.weights_dir)."""
    from wildid.kaggle.bundle import resolve_user
    from wildid.kaggle.imagenet import imagenet_weights

    made = imagenet_weights(out, model, resolve_user(user), cache)
    typer.echo(
        f"{made.root}: dataset {made.slug}; set model.weights_dir=/kaggle/input/"
        f"{made.slug.split('/')[-1]}"
    )


# --------------------------------------------------------------------------- gallery
# The field biologist's loop (wildid.gallery): package a run, identify, enroll.


@app.command("package")
def package_(
    run: Annotated[
        str | None, typer.Argument(help="run folder (working/<run>) or a run name under --working")
    ] = None,
    out: Annotated[Path | None, typer.Argument(help="the archive to write (.zip)")] = None,
    inspect: Annotated[
        Path | None, typer.Option("--inspect", help="list a package instead of building one")
    ] = None,
    working: Annotated[Path, typer.Option(help="where run names are looked up")] = Path("working"),
    local: Annotated[
        bool | None,
        typer.Option(
            "--local/--no-local",
            help="carry the gallery's keypoints, so identify ranks by the calibrated fusion "
            "of the embedding and local matching (default: the run's fusion.local)",
        ),
    ] = None,
) -> None:
    """Package a trained run (weights, gallery, threshold, calibration) as one archive."""
    from wildid.gallery.package import PackageError, build_package, inspect_package
    from wildid.layout import RunLayout

    if inspect is not None:
        typer.echo(json.dumps(inspect_package(inspect), indent=2))
        return
    if run is None or out is None:
        raise PackageError("usage: wildid package RUN OUT, or wildid package --inspect PACKAGE")
    folder = Path(run)
    if not folder.is_dir():
        folder = RunLayout(working, Path("submissions"), run).root
    if not folder.is_dir():
        raise PackageError(f"{run}: neither a run folder nor a run under {working}/.")
    archive = build_package(folder, out, local=local, progress=True)
    info = inspect_package(archive)
    gallery = info["gallery"]
    typer.echo(
        f"{archive}: {gallery['photos']} photos of {gallery['individuals']} individuals, "
        f"threshold {info['threshold']}, {info['members']} members, {info['bytes']} bytes"
        + (f", keypoints ({info['local']['source']} fusion)" if info.get("local") else "")
    )


@app.command()
def identify(
    package: Annotated[Path, typer.Argument(help="a package archive or its directory")],
    photos: Annotated[list[Path], typer.Argument(help="photos to identify")],
    sighting: Annotated[
        bool, typer.Option("--sighting", help="the photos are one encounter: they vote together")
    ] = False,
    k: Annotated[int, typer.Option("-k", min=1, help="candidates per photo")] = 5,
    out: Annotated[
        Path | None, typer.Option("--out", help="write the rows to FILE (.csv, or .json)")
    ] = None,
    sheet: Annotated[
        Path | None, typer.Option("--sheet", help="write one match sheet PNG per photo here")
    ] = None,
    side: Annotated[
        str | None,
        typer.Option(
            "--side",
            help="the photos' flank (e.g. left): only same-flank gallery photos are compared; "
            "default: read from each file name with the package's side regex, if any",
        ),
    ] = None,
    operating_point: Annotated[
        str | None,
        typer.Option(
            "--operating-point",
            help="new_individual when the best probability is under this point's threshold: "
            "gmean (balances known and new animals; the default) or map5 (MAP@5-optimal)",
        ),
    ] = None,
    local: Annotated[
        bool | None,
        typer.Option(
            "--local/--no-local",
            help="rank by the fusion of the embedding and keypoints (the default for a "
            "package built with --local), or by the embedding alone",
        ),
    ] = None,
) -> None:
    """Rank the known individuals for each photo: score, probability, new_individual."""
    from wildid.gallery.identify import Identifier, match_sheet, results_table, write_results

    identifier = Identifier(package, operating_point=operating_point, local=local)
    results = identifier.identify(photos, sighting=sighting, k=k, sides=side)
    typer.echo(results_table(results).to_string(index=False))
    for result in results:
        verdict = "new_individual" if result.new_individual else result.candidates[0].individual_id
        typer.echo(f"{result.query}: {verdict}")
    if out is not None:
        typer.echo(f"rows: {write_results(results, out)}")
    if sheet is not None:
        for i, result in enumerate(results):
            made = match_sheet(result, sheet / f"{i:03d}_{Path(result.query).stem}.png")
            typer.echo(f"sheet: {made}")


@app.command()
def enroll(
    package: Annotated[Path, typer.Argument(help="a package archive or its directory")],
    photos: Annotated[list[Path] | None, typer.Argument(help="photos to add")] = None,
    as_: Annotated[str | None, typer.Option("--as", help="a known individual")] = None,
    new: Annotated[str | None, typer.Option("--new", help="name a new individual")] = None,
    by: Annotated[str, typer.Option("--by", help="who decided (the history records it)")] = "cli",
    undo: Annotated[int | None, typer.Option("--undo", help="reverse history entry N")] = None,
) -> None:
    """Add photos to the gallery without retraining (or undo an entry of its history)."""
    from wildid.gallery.store import Catalogue, CatalogueError

    catalogue = Catalogue(package)
    if undo is not None:
        if photos or as_ or new:
            raise CatalogueError("--undo takes no photos, --as or --new.")
        typer.echo(f"entry {catalogue.undo(undo, who=by)}: undid entry {undo}")
        return
    for record in catalogue.enroll(photos or [], individual_id=as_, new_name=new, who=by):
        typer.echo(f"entry {record.entry}: {record.source} -> {record.individual_id}")


@app.command()
def serve(
    package: Annotated[Path, typer.Argument(help="a package archive or its unpacked directory")],
    port: Annotated[int, typer.Option(help="TCP port")] = 7860,
    host: Annotated[
        str, typer.Option(help="interface to bind; 0.0.0.0 shares the app on the network")
    ] = "127.0.0.1",
) -> None:
    """Serve the review app: identify uploaded photos, confirm or name, browse, export."""
    from wildid.gallery.app import serve as serve_app

    if host != "127.0.0.1":
        typer.secho(
            f"warning: serving on {host}: anyone who can reach this machine can enroll photos",
            fg=typer.colors.YELLOW,
            err=True,
        )
    typer.echo(f"wildid serve: http://{host}:{port}/ (Ctrl+C stops)")
    serve_app(package, host=host, port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
