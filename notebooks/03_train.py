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

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

history = pd.read_csv(best.parent / "history.csv")
columns = [c for c in ("loss", "val_map5", "val_map5_closed") if c in history]
fig, axes = plt.subplots(1, len(columns), figsize=(3.5 * len(columns), 2.6), squeeze=False)
for ax, column in zip(axes[0], columns, strict=True):
    ax.plot(history["epoch"], history[column], marker="o")
    ax.set(xlabel="epoch", title=column)
fig.tight_layout()
plt.show()
display(history)
