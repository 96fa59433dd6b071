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
# # 05 · Retrieve: nearest individuals, and when to answer `new_individual`
#
# Each query image is compared with every train image (cosine similarity); train images
# are grouped by individual and each individual keeps its best match. `new_individual`
# goes into the top 5 just before the first candidate whose similarity falls below a
# threshold. The threshold is tuned on the validation split, whose held-out individuals
# play the unseen animals of the test set: too low and unseen animals are matched to
# look-alikes, too high and known ones are called new.
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
from wildid.notebook import trained_embeddings

competition, split = pipeline.prepare(config)
embeddings = trained_embeddings(config, competition, split)  # cached by 04
result = pipeline.evaluate("trained", config, competition, split, embeddings)
print(
    f"threshold {result.threshold}, validation MAP@5 {result.val_map5:.4f}"
    + (f", test MAP@5 {result.test_map5:.4f}" if result.test_map5 is not None else "")
)

# %%
import matplotlib.pyplot as plt

if result.curve:
    xs, ys = zip(*result.curve, strict=True)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(xs, ys, marker=".")
    ax.axvline(
        result.threshold, color="red", linestyle="--", label=f"chosen {result.threshold:.2f}"
    )
    ax.set(xlabel="new_individual threshold (cosine)", ylabel="validation MAP@5")
    ax.legend()
    plt.show()
else:
    print("threshold fixed by retrieval.threshold (or no validation images): no tuning curve")

# %% [markdown]
# The baseline (pretrained backbone + GeM, no training) through the same search and
# threshold tuning: what the training has to beat. Skipped when `baseline: false`.

# %%
import pandas as pd
from IPython.display import display

from wildid.train.engine import resolve_device

rows = [result]
if config.baseline:
    crops = pipeline.crop(config, competition, progress=False)
    device = resolve_device(config.train.device)
    rows.append(pipeline.run_baseline(config, competition, split, crops, device))
pd.DataFrame(
    [
        {
            "method": r.name,
            "threshold": r.threshold,
            "val MAP@5": r.val_map5,
            "test MAP@5": r.test_map5,
            "submission": str(r.submission),
        }
        for r in rows
    ]
)

# %%
if result.breakdown is not None:
    display(result.breakdown)

# %% [markdown]
# The report's identification figures (validation, and test where solution.csv exists):
# MAP@5 and top-1/top-5 of the predictions, image-level precision@k, mAP and recall@k,
# and AnimalCLEF's BAKS/BAUS; then photos of validation queries right and wrong at rank 1
# (green frame: the same animal, red: another).

# %%
from IPython.display import Image

from wildid.layout import RunLayout
from wildid.report.collect import read_run
from wildid.report.figures import figures_frame, run_figures
from wildid.report.galleries import gallery_rows, render_gallery

layout = RunLayout.of(config)
files = read_run(layout)
figures = run_figures(files)
display(figures_frame(figures))
validation = figures.sets.get("validation")
for kind in ("right", "wrong"):
    rows = gallery_rows(files, validation, right=kind == "right") if validation else []
    path = render_gallery(files, rows, layout.report / f"matches_{kind}.png") if rows else None
    if path is not None:
        print(f"validation queries {kind} at rank 1")
        display(Image(filename=str(path)))
