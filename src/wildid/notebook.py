r"""What the notebooks share: which config, data folder and cached outputs they use.

The notebooks (notebooks/01_data.py ... 06_submit.py) are thin layers over
`wildid.pipeline`; each one runs on its own after the previous ones, locally or as its own
Kaggle kernel. Their first code cell is a papermill `parameters` cell (CONFIG, OVERRIDES);
`start(CONFIG, OVERRIDES)` then decides, in this order (later wins):

    config     CONFIG, else WILDID_CONFIG, else on Kaggle with the competition attached
               the GPU config sized for Kaggle (KAGGLE_CONFIG), else the CPU demo `mini`
    overrides  data=<the attached competition> (Kaggle), model.checkpoint=<an earlier
               kernel's trained models> (Kaggle, when attached and not set), WILDID_OVERRIDES,
               then OVERRIDES

On Kaggle (a `<root>/input` folder; root is WILDID_KAGGLE_ROOT, default /kaggle) earlier
kernels' outputs are attached read-only as `<root>/input/<kernel>/`; their `working/<run>/`
folders are read, never written: a trained model through `model.checkpoint`, embeddings by
copying them into this kernel's working folder (the caches then decide whether they still
hold). Outputs go to `<root>/working`.

Other environment variables, for tests and for running the notebooks on other data:

    WILDID_SYNTH      SynthSpec fields for the synthetic data, e.g. "individuals=20 size=96"
    WILDID_CATALOGUE  a folder-per-individual catalogue to import instead of synthesizing
    WILDID_IMPORT     ImportSpec fields for that import, e.g. "group='^(\d+)_' seed=1"
    WILDID_WORKDIR    where working/, submissions/ and relative data paths live (default:
                      <root>/working on Kaggle, else the repository root)
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from wildid.config import Config, ConfigError, load_config
from wildid.layout import RunLayout

COMPETITION_SLUG = "happy-whale-and-dolphin"
KAGGLE_CONFIG = "kaggle/tf_efficientnet_b6_ns"  # the default on Kaggle with the competition
LOCAL_CONFIG = "mini"


def kaggle_root(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("WILDID_KAGGLE_ROOT") or "/kaggle")


def on_kaggle(env: Mapping[str, str] = os.environ) -> bool:
    return (kaggle_root(env) / "input").is_dir()


def kaggle_competition(env: Mapping[str, str] = os.environ) -> Path | None:
    """Where Kaggle mounts the competition when it is attached to the notebook, if it is."""
    folder = kaggle_root(env) / "input" / COMPETITION_SLUG
    return folder if on_kaggle(env) and folder.is_dir() else None


def enter_workdir(root: str | Path, env: Mapping[str, str] = os.environ) -> Path:
    """Work where outputs belong: WILDID_WORKDIR, else <root>/working on Kaggle, else ROOT.

    Every notebook calls this first, so relative paths in the configs (input/, working/,
    submissions/) resolve the same way whichever notebook a user opens.
    """
    kaggle = on_kaggle(env)
    workdir = Path(env.get("WILDID_WORKDIR") or (kaggle_root(env) / "working" if kaggle else root))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    print(f"working in {workdir}" + ("  (Kaggle)" if kaggle else ""))
    return workdir


def repository_root(env: Mapping[str, str] = os.environ) -> Path:
    """WILDID_ROOT, else the folder at or above the working directory holding configs/,
    else the current folder (an installed wildid has its configs inside the package)."""
    if env.get("WILDID_ROOT"):
        return Path(env["WILDID_ROOT"]).resolve()
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "configs" / "mini.yaml").is_file():
            return folder.resolve()
    return Path.cwd()


def start(
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] = os.environ,
) -> Config:
    """Every notebook's first step: enter the working directory, load the config (see the
    module docstring for the order), attach earlier kernels' outputs, say where outputs go."""
    enter_workdir(repository_root(env), env)
    loaded = notebook_config(config, overrides, env)
    if loaded.model.checkpoint is None and (upstream := upstream_models(loaded, env)):
        loaded = notebook_config(config, [f"model.checkpoint={upstream}", *overrides], env)
    for copied in seed_embeddings(loaded, env):
        print(f"embeddings of an earlier kernel: {copied}")
    layout = RunLayout.of(loaded)
    print(
        f"config {loaded.name}: data {loaded.data}, outputs {layout.root}, "
        f"submission {layout.submission()}"
        + (f", trained model {loaded.model.checkpoint}" if loaded.model.checkpoint else "")
    )
    return loaded


def _pairs(text: str, variable: str) -> dict[str, object]:
    """`a=1 b=x` -> {"a": 1, "b": "x"}, values parsed as YAML like config overrides."""
    pairs: dict[str, object] = {}
    for item in shlex.split(text):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{variable}: '{item}' is not key=value (e.g. 'size=96').")
        pairs[key] = yaml.safe_load(value)
    return pairs


def env_overrides(env: Mapping[str, str] = os.environ) -> list[str]:
    """Overrides from WILDID_OVERRIDES, after Kaggle's data folder when it is attached."""
    competition = kaggle_competition(env)
    kaggle = [f"data={competition}"] if competition is not None else []
    return kaggle + shlex.split(env.get("WILDID_OVERRIDES", ""))


def config_source(config: str | Path | None = None, env: Mapping[str, str] = os.environ) -> str:
    """The config a notebook loads: CONFIG, WILDID_CONFIG, the Kaggle default, or mini."""
    if config:
        return str(config)
    if env.get("WILDID_CONFIG"):
        return env["WILDID_CONFIG"]
    return KAGGLE_CONFIG if kaggle_competition(env) is not None else LOCAL_CONFIG


def notebook_config(
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] = os.environ,
) -> Config:
    """The config (`config_source`) with the environment's overrides, then `overrides`."""
    return load_config(config_source(config, env), [*env_overrides(env), *overrides])


def upstream_runs(config: Config, env: Mapping[str, str] = os.environ) -> list[Path]:
    """This run's folders in earlier kernels' outputs: <root>/input/<kernel>/working/<run>."""
    if not on_kaggle(env):
        return []
    pattern = f"*/{Path(config.working).name}/{config.name}"
    return sorted(p for p in (kaggle_root(env) / "input").glob(pattern) if p.is_dir())


def upstream_models(config: Config, env: Mapping[str, str] = os.environ) -> Path | None:
    """The models/ folder of the latest attached kernel that trained this run, if any."""
    found = [run / "models" for run in upstream_runs(config, env)]
    found = [m for m in found if any(m.glob("fold*/best.pt"))]
    return max(
        found, key=lambda m: max(f.stat().st_mtime for f in m.glob("fold*/best.pt")), default=None
    )


def seed_embeddings(config: Config, env: Mapping[str, str] = os.environ) -> list[Path]:
    """Copy earlier kernels' embeddings of this run into the working folder where it has none.

    Copies keep their times, so `load_embeddings` and the embed cache judge them as they
    would have judged them where they were made. The attached folders are only read.
    """
    target = RunLayout.of(config).all_embeddings
    if target.exists():
        return []
    for run in upstream_runs(config, env):
        source = run / "embeddings"
        if source.is_dir():
            shutil.copytree(source, target, copy_function=shutil.copy2)
            return [source]
    return []


def kaggle_submission(submission: str | Path, env: Mapping[str, str] = os.environ) -> Path | None:
    """On Kaggle, copy the submission to <root>/working/submission.csv, where a notebook
    submitted to the competition must leave it; elsewhere nothing."""
    if not on_kaggle(env):
        return None
    target = kaggle_root(env) / "working" / "submission.csv"
    shutil.copyfile(submission, target)
    return target


def _spec(cls: type, variable: str, env: Mapping[str, str]):
    fields = {f.name for f in dataclasses.fields(cls)}
    values = _pairs(env.get(variable, ""), variable)
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{variable}: unknown field(s) {unknown}; known: {sorted(fields)}.")
    return cls(**values)


def synth_spec(env: Mapping[str, str] = os.environ):  # -> SynthSpec (lazy import)
    """The synthetic competition to generate: SynthSpec defaults, WILDID_SYNTH overrides."""
    from wildid.synth.render import SynthSpec

    return _spec(SynthSpec, "WILDID_SYNTH", env)


def import_spec(env: Mapping[str, str] = os.environ):  # -> ImportSpec (lazy import)
    """How to import WILDID_CATALOGUE: ImportSpec defaults, WILDID_IMPORT overrides."""
    from wildid.data.catalogue import ImportSpec

    return _spec(ImportSpec, "WILDID_IMPORT", env)


def embeddings_dir(config: Config) -> Path:
    """Where `pipeline.run` (and notebook 04) save the trained model's embeddings."""
    return RunLayout.of(config).embeddings(0)


def load_embeddings(config: Config, competition):  # -> Embeddings | None
    """Cached embeddings if they match the competition's images and the trained model.

    Returns None when they are missing, list other images (another data folder), or are
    older than the model (`model.checkpoint`, else the run's own best.pt: it was
    retrained): the caller embeds again then.
    """
    from wildid.infer.embed import Embeddings
    from wildid.train.checkpoints import model_checkpoint

    folder = embeddings_dir(config)
    files = [folder / n for n in ("index.csv", "train.npy", "test.npy")]
    if not all(f.is_file() for f in files):
        return None
    best = model_checkpoint(config, 0)
    if best.is_file() and best.stat().st_mtime_ns > files[1].stat().st_mtime_ns:
        return None
    index = pd.read_csv(files[0], dtype=str)
    expected = pd.concat(
        [
            competition.train[["image"]].assign(split="train"),
            competition.test[["image"]].assign(split="test"),
        ]
    )
    if not index[["image", "split"]].reset_index(drop=True).equals(expected.reset_index(drop=True)):
        return None
    train, test = (np.load(f).astype(np.float32) for f in files[1:])
    return Embeddings(train, test)


def trained_embeddings(config: Config, competition, split):  # -> Embeddings
    """The trained model's embeddings: cached (notebook 04, or an earlier kernel), else
    computed from the crops and saved.

    Trains first only if no model exists (`pipeline.train` resumes a finished run without
    training, and trains nothing under `model.checkpoint`), so notebooks 05 and 06 work
    after 01-04 and on their own; crops are only made when something must be embedded.
    """
    from wildid import pipeline
    from wildid.train.engine import load_trained, resolve_device

    cached = load_embeddings(config, competition)
    if cached is not None:
        return cached
    crops = pipeline.crop(config, competition, progress=False)
    best = pipeline.train(config, crops, split, progress=False)[0]
    model = load_trained(config, best, resolve_device(config.train.device))
    return pipeline.embed(config, competition, crops, model, embeddings_dir(config))
