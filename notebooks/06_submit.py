# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Submit: write, check, score
#
# The submission (`image,predictions`, five space-separated labels per test image) is
# written from the cached embeddings and checked locally for everything Kaggle would
# reject or mis-score: header, every test image exactly once, five distinct labels each a
# train `individual_id` or `new_individual`. With a `solution.csv` (synthetic or imported
# data) it is also scored with Kaggle's MAP@5.
# %% tags=["parameters"]
# Parameters (papermill convention: this cell is tagged `parameters`). CONFIG None: the GPU
# config sized for Kaggle where the competition is attached, else WILDID_CONFIG or mini.
CONFIG = None
OVERRIDES = []  # dotted key=value strings, e.g. ["train.epochs=1"]

# %%
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("wildid") is None:  # a Kaggle kernel: install the code dataset
    bundle = os.environ.get("WILDID_KAGGLE_ROOT", "/kaggle") + "/input/wildid-code"
    subprocess.run([sys.executable, f"{bundle}/install.py"], check=True)

from wildid import pipeline
from wildid.notebook import start

config = start(CONFIG, OVERRIDES)

# %%
from wildid.evaluation.submission import validate_against_competition
from wildid.notebook import kaggle_submission, trained_embeddings

competition, split = pipeline.prepare(config)
embeddings = trained_embeddings(config, competition, split)
result = pipeline.evaluate("trained", config, competition, split, embeddings)
submission = result.submission
validate_against_competition(submission, competition)  # raises, naming row and fix
print(f"{submission}: valid, {len(competition.test)} test images")
if (copied := kaggle_submission(submission)) is not None:
    print(f"{copied}: the file Kaggle scores when this notebook is submitted")

# %%
import pandas as pd
from IPython.display import display

pd.read_csv(submission).head()

# %%
from wildid.evaluation.metrics import score_breakdown

solution = competition.root / "solution.csv"
if solution.is_file():
    display(score_breakdown(submission, solution))
else:
    print("no solution.csv (the real competition): the score comes from Kaggle")

# %% [markdown]
# The run's report, as `wildid run` writes it: one self-contained page (open it in a
# browser) with every figure and picture, and figures.json beside it.

# %%
report = pipeline.report(config)  # on failure: a warning saying why, and None
print(f"report: {report}")

# %% [markdown]
# The same steps on the command line, and the upload (shown, not run: uploading needs
# your Kaggle API token and is your decision):

# %%
import shlex
from pathlib import Path

from wildid.notebook import config_source, env_overrides

data = Path(config.data)
run_args = shlex.join([config_source(CONFIG), *env_overrides(), *OVERRIDES])
print(f"""\
wildid run {run_args}
wildid validate {submission} --data {data}
wildid score {submission} {data / "solution.csv"}
wildid report {config.name}
kaggle competitions submit -c happy-whale-and-dolphin -f {submission} -m "wildid {config.name}"
""")
