r"""What the notebooks share: which config, data folder and cached outputs they use.

The notebooks (notebooks/01_data.py ... 06_submit.py) are thin layers over
`wildid.pipeline`; each one must run on its own after the previous ones, so each
re-derives its inputs from the files the earlier ones cached. Environment variables let
a test, or a Kaggle session, run the same notebooks on other data without editing them:

    WILDID_CONFIG     the YAML config (default: configs/mini.yaml in the repository)
    WILDID_OVERRIDES  space-separated key=value overrides, e.g. "train.epochs=1"
    WILDID_SYNTH      SynthSpec fields for the synthetic data, e.g. "individuals=20 size=96"
    WILDID_CATALOGUE  a folder-per-individual catalogue to import instead of synthesizing
    WILDID_IMPORT     ImportSpec fields for that import, e.g. "group='^(\d+)_' seed=1"
    WILDID_WORKDIR    where working/, submissions/ and relative data paths live (set in
                      each notebook's first cell; default: the repository root)
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from wildid.config import Config, ConfigError, load_config
from wildid.layout import RunLayout

KAGGLE_INPUT = Path("/kaggle/input")
# Where Kaggle mounts the competition when it is attached to a notebook.
KAGGLE_COMPETITION = KAGGLE_INPUT / "happy-whale-and-dolphin"


def on_kaggle() -> bool:
    return KAGGLE_INPUT.is_dir()


def enter_workdir(root: str | Path, env: Mapping[str, str] = os.environ) -> Path:
    """Work where outputs belong: WILDID_WORKDIR, else /kaggle/working on Kaggle, else ROOT.

    Every notebook calls this first, so relative paths in the configs (input/, working/,
    submissions/) resolve the same way whichever notebook a user opens.
    """
    workdir = Path(env.get("WILDID_WORKDIR") or ("/kaggle/working" if on_kaggle() else root))
    os.chdir(workdir)
    print(f"repository {root}\nworking in {workdir}" + ("  (Kaggle)" if on_kaggle() else ""))
    return workdir


def repository_root(env: Mapping[str, str] = os.environ) -> Path:
    """WILDID_ROOT, else the folder at or above the working directory holding configs/,
    else the checkout this package was installed from."""
    if env.get("WILDID_ROOT"):
        return Path(env["WILDID_ROOT"]).resolve()
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "configs" / "mini.yaml").is_file():
            return folder.resolve()
    return Path(__file__).resolve().parents[2]


def start(env: Mapping[str, str] = os.environ) -> tuple[Path, Config]:
    """Every notebook's first cell: find the repository, enter the working directory,
    load the config (WILDID_CONFIG, WILDID_OVERRIDES) and say where outputs go."""
    root = repository_root(env)
    enter_workdir(root, env)
    config = notebook_config(root, env)
    layout = RunLayout.of(config)
    print(
        f"config {config.name}: data {config.data}, outputs {layout.root}, "
        f"submission {layout.submission()}"
    )
    return root, config


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
    kaggle = [f"data={KAGGLE_COMPETITION}"] if KAGGLE_COMPETITION.is_dir() else []
    return kaggle + shlex.split(env.get("WILDID_OVERRIDES", ""))


def notebook_config(root: str | Path, env: Mapping[str, str] = os.environ) -> Config:
    """configs/mini.yaml (or WILDID_CONFIG) with the environment's overrides applied."""
    path = env.get("WILDID_CONFIG") or Path(root) / "configs" / "mini.yaml"
    return load_config(path, env_overrides(env))


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


def checkpoint(config: Config) -> Path:
    """The best checkpoint `pipeline.train` writes."""
    return RunLayout.of(config).checkpoint(0)


def load_embeddings(config: Config, competition):  # -> Embeddings | None
    """Cached embeddings if they match the competition's images and the checkpoint.

    Returns None when they are missing, list other images (another data folder), or are
    older than the checkpoint (the model was retrained): the caller embeds again then.
    """
    from wildid.infer.embed import Embeddings

    folder = embeddings_dir(config)
    files = [folder / n for n in ("index.csv", "train.npy", "test.npy")]
    if not all(f.is_file() for f in files):
        return None
    best = checkpoint(config)
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


def trained_embeddings(config: Config, competition, crops, split):  # -> Embeddings
    """The trained model's embeddings: from notebook 04's cache, else computed (and saved).

    Trains first only if no checkpoint exists (`pipeline.train` resumes a finished run
    without training), so notebooks 05 and 06 work after 01-04 and on their own.
    """
    from wildid import pipeline
    from wildid.train.engine import load_trained, resolve_device

    cached = load_embeddings(config, competition)
    if cached is not None:
        return cached
    best = pipeline.train(config, crops, split, progress=False)[0]
    model = load_trained(config, best, resolve_device(config.train.device))
    return pipeline.embed(config, competition, crops, model, embeddings_dir(config))
