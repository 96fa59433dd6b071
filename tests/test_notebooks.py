"""The notebooks: paired .py/.ipynb in sync, their helpers, and a run of all six in order.

The run uses a tiny synthetic competition (WILDID_SYNTH), one epoch at 64 px
(WILDID_OVERRIDES) and a temporary working directory (WILDID_WORKDIR), in a kernel of
the interpreter running the tests, so it exercises exactly this checkout and venv.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pandas as pd
import pytest

from wildid.config import ConfigError, load_config
from wildid.data.competition import load_competition
from wildid.evaluation.submission import validate_against_competition
from wildid.io import write_csv, write_npy
from wildid.layout import RunLayout
from wildid.notebook import (
    COMPETITION_SLUG,
    KAGGLE_CONFIG,
    env_overrides,
    import_spec,
    kaggle_submission,
    load_embeddings,
    notebook_config,
    synth_spec,
)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ["01_data", "02_crop", "03_train", "04_embed", "05_retrieve", "06_submit"]
TINY_ENV = {
    "WILDID_SYNTH": "individuals=20 size=96",
    "WILDID_OVERRIDES": "train.epochs=1 train.image_size=64 baseline=false "
    "train.num_workers=0 embed.flip_tta=false",
}
# Inline figures each notebook must show: a backend switch or a broken plot shows up here.
FIGURES = {"01_data": 2, "02_crop": 1, "03_train": 1, "04_embed": 2, "05_retrieve": 2}


def _sources(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize("name", NAMES)
def test_pairs_exist_and_match(name: str) -> None:
    script, notebook = NOTEBOOKS / f"{name}.py", NOTEBOOKS / f"{name}.ipynb"
    assert script.is_file() and notebook.is_file()
    from_script = jupytext.read(script)
    assert from_script.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert _sources(from_script) == _sources(jupytext.read(notebook)), (
        f"{notebook.name} differs from {script.name}: run `jupytext --sync {script}`"
    )


def test_env_overrides_and_specs() -> None:
    env = {
        "WILDID_OVERRIDES": "train.epochs=1  data='my dir'",
        "WILDID_SYNTH": "size=96 seed=3",
        "WILDID_IMPORT": r"group='^(\d+)_' new_fraction=0.3",
    }
    assert env_overrides(env)[-2:] == ["train.epochs=1", "data=my dir"]
    spec = synth_spec(env)
    assert (spec.size, spec.seed, spec.individuals) == (96, 3, 150)
    imported = import_spec(env)
    assert (imported.group, imported.new_fraction) == (r"^(\d+)_", 0.3)
    with pytest.raises(ConfigError, match=r"WILDID_SYNTH: unknown field\(s\) \['sise'\]"):
        synth_spec({"WILDID_SYNTH": "sise=96"})
    with pytest.raises(ConfigError, match="WILDID_SYNTH: 'size' is not key=value"):
        synth_spec({"WILDID_SYNTH": "size"})


def test_notebook_config_reads_config_path_and_overrides(tmp_path: Path) -> None:
    config = notebook_config(env={"WILDID_OVERRIDES": "train.epochs=2"})
    assert (config.name, config.train.epochs) == ("mini", 2)
    other = tmp_path / "other.yaml"
    other.write_text(f"_base_: {REPO / 'configs' / 'base.yaml'}\nname: other\n")
    assert notebook_config(env={"WILDID_CONFIG": str(other)}).name == "other"
    # the parameters cell's CONFIG and OVERRIDES win over the environment
    chosen = notebook_config(
        "cpu/efficientnet_lite0",
        ["train.epochs=3"],
        env={"WILDID_CONFIG": str(other), "WILDID_OVERRIDES": "train.epochs=2"},
    )
    assert (chosen.name, chosen.train.epochs) == ("cpu_lite0", 3)
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        notebook_config(env={"WILDID_OVERRIDES": "trian.epochs=2"})


def test_on_kaggle_the_default_is_the_gpu_config_and_the_competition(tmp_path: Path) -> None:
    competition = tmp_path / "input" / COMPETITION_SLUG
    competition.mkdir(parents=True)
    env = {"WILDID_KAGGLE_ROOT": str(tmp_path)}
    config = notebook_config(env=env)
    assert config.name == load_config(KAGGLE_CONFIG).name and config.data == str(competition)
    assert config.train.num_workers == 4 and config.train.precision == "auto"
    assert notebook_config(env={**env, "WILDID_CONFIG": "mini"}).name == "mini"
    (tmp_path / "working").mkdir()
    submission = tmp_path / "s.csv"
    submission.write_text("image,predictions\n")
    assert kaggle_submission(submission, env) == tmp_path / "working" / "submission.csv"
    assert kaggle_submission(submission, {"WILDID_KAGGLE_ROOT": str(tmp_path / "no")}) is None


def test_every_notebook_starts_with_a_parameters_cell() -> None:
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), name
        assert "CONFIG = None" in code[0].source and "OVERRIDES = []" in code[0].source
        assert "start(CONFIG, OVERRIDES)" in code[1].source, name


def test_cached_embeddings_must_match_the_competition(tiny_comp: Path, tiny_config) -> None:  # noqa: ANN001
    config = tiny_config()
    competition = load_competition(tiny_comp)
    assert load_embeddings(config, competition) is None  # nothing cached yet
    folder = RunLayout.of(config).root / "embeddings" / "fold0"
    train = np.eye(len(competition.train), 8, dtype=np.float16)
    write_npy(folder / "train.npy", train)
    write_npy(folder / "test.npy", np.zeros((len(competition.test), 8), np.float16))
    index = [
        *(("train", i) for i in competition.train["image"]),
        *(("test", i) for i in competition.test["image"]),
    ]
    table = pd.DataFrame(index, columns=["split", "image"])[["image", "split"]]
    write_csv(table, folder / "index.csv")
    cached = load_embeddings(config, competition)
    assert cached is not None and np.array_equal(cached.train, train.astype(np.float32))
    write_csv(table.iloc[::-1], folder / "index.csv")  # other order: not these images
    assert load_embeddings(config, competition) is None


def _kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this interpreter, whatever kernels are installed elsewhere."""
    spec = tmp_path / "jupyter" / "kernels" / "wildid-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "wildid test",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "wildid-test"


@pytest.mark.slow
def test_notebooks_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    kernel = _kernel(tmp_path, monkeypatch)
    workdir = tmp_path / "work"
    workdir.mkdir()
    for key, value in {**TINY_ENV, "WILDID_WORKDIR": str(workdir)}.items():
        monkeypatch.setenv(key, value)
    for var in (
        "WILDID_CONFIG",
        "WILDID_CATALOGUE",
        "WILDID_IMPORT",
        "WILDID_ROOT",
        "WILDID_KAGGLE_ROOT",
    ):
        monkeypatch.delenv(var, raising=False)
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        NotebookClient(
            notebook,
            timeout=300,
            kernel_name=kernel,
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        ).execute()
        figures = sum(
            "image/png" in output.get("data", {})
            for cell in notebook.cells
            if cell.cell_type == "code"
            for output in cell.outputs
        )
        assert figures >= FIGURES.get(name, 0), f"{name}: {figures} inline figure(s)"
    competition = load_competition(workdir / "input" / "mini-whales")
    assert competition.train["individual_id"].nunique() <= 20  # the tiny spec was used
    submission = workdir / "submissions" / "mini.csv"
    validate_against_competition(submission, competition)
    assert (workdir / "working" / "mini" / "metrics.json").is_file()
    assert (workdir / "working" / "mini" / "report" / "index.html").is_file()  # 06's report
