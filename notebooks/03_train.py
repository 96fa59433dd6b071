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
# # 03 · Train: backbone + GeM + ArcFace on the training split
#
# `pipeline.train` fits the embedding model on the split's `train` images and validates
# each epoch on its `val` images (known individuals and ones held out as new). It writes
# `best.pt`, `last.pt` and `history.csv` under `working/<name>/models/fold0/` and resumes
# from `last.pt`, so re-running this notebook after a finished (or killed) run continues
# instead of starting over.
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
competition, split = pipeline.prepare(config)
crops = pipeline.crop(config, competition, progress=False)
best = pipeline.train(config, crops, split)[0]  # one checkpoint per fold
print(f"best checkpoint: {best}")

# %% [markdown]
# The training curves of the run's report (`wildid report`): loss, validation MAP@5 (the
# closed set dotted) and learning rate per epoch, one colour per fold.

# %%
from IPython.display import display

from wildid.layout import RunLayout
from wildid.report.collect import read_run
from wildid.report.pictures import show, training_curves

histories = read_run(RunLayout.of(config)).histories  # history.csv of every fold
if histories:
    show(training_curves(histories, names=(config.name, "")))
    display(histories[min(histories)])
else:
    print("no history.csv: this run's models were trained elsewhere without one")
