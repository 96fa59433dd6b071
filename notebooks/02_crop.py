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
# # 02 · Crop: one small image per photo and crop kind
#
# Each photo is cut to its box (`crop.kinds`: `fullbody`, `backfin`, or `whole` for the
# uncropped photo), expanded by `crop.margin` and shrunk to `crop.size` px, then cached in
# `working/crops/<fingerprint>/`. Training then reads small files instead of decoding
# large photos. Boxes come from the competition's `boxes.csv`, from `crop.boxes` files (the
# public Happywhale detections attached as a dataset; the Kaggle configs use Jan Bremer's
# full-body boxes) or from the detector. A photo without a box falls back to the whole
# photo, recorded as `fallback`; when most photos of a kind have none, this stage stops and
# says what to do, rather than train on whole photos in silence.
# Re-running is instant: the fingerprint covers the config and the input tables.
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
crops = pipeline.crop(config, competition)
print(f"{len(crops.table)} crops in {crops.root}")
crops.table.groupby(["split", "kind", "source"]).size().rename("crops").to_frame()

# %% [markdown]
# A few crops of the most-photographed individual next to each other: the model must
# tell this animal from others of its species by its marks alone.

# %%
import matplotlib.pyplot as plt

from wildid.data.dataset import read_rgb

kind = config.crop.kinds[0]
top = competition.train.groupby("individual_id").size().idxmax()
images = competition.train.loc[competition.train["individual_id"] == top, "image"].head(6)
paths = crops.paths("train", kind, images)
fig, axes = plt.subplots(1, len(paths), figsize=(2.2 * len(paths), 1.8), squeeze=False)
for ax, path in zip(axes[0], paths, strict=True):
    ax.imshow(read_rgb(path))
    ax.axis("off")
fig.suptitle(f"{top}: {kind} crops", fontsize=9)
plt.show()
