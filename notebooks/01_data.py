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
# # 01 · Data: get a competition folder, validate it, look at it
#
# wildid works on the **Happywhale layout**: `train.csv` (image, species, individual_id),
# `train_images/`, `test_images/`, `sample_submission.csv`, and optionally `solution.csv`
# (local scoring) and `boxes.csv` (known crops). This notebook makes sure `config.data`
# holds one, in this order of preference:
#
# 1. **Kaggle, competition attached**: `/kaggle/input/happy-whale-and-dolphin` is used as
#    is (read-only; Kaggle mounts it there when you *Add data* → the competition).
#    Outputs go to `/kaggle/working` (the only writable folder, kept as notebook output).
# 2. **A folder that already holds the layout** (`data=...` in the config or in
#    `WILDID_OVERRIDES`).
# 3. **Your own catalogue**, one folder per individual: set `WILDID_CATALOGUE` to it (and
#    `WILDID_IMPORT`, e.g. `group='^(\d+)_'`, for sighting ids in file names) and it is
#    imported with `wildid.data.catalogue.import_catalogue` (`wildid import` on the CLI).
# 4. Otherwise the **synthetic mini-competition** (`wildid synth`; `WILDID_SYNTH` sets its
#    size, e.g. `individuals=20 size=96`).
#
# Nothing here downloads anything. Later notebooks (02 … 06) re-load the same config and
# re-use what this one and the others cached, so run them in order.
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
import os
from pathlib import Path

from wildid.data.catalogue import import_catalogue
from wildid.notebook import COMPETITION_SLUG, import_spec, on_kaggle, synth_spec
from wildid.synth.render import synthesize

data = Path(config.data)
catalogue = os.environ.get("WILDID_CATALOGUE")
if (data / "train.csv").is_file():
    source = "existing folder"
elif catalogue:
    summary = import_catalogue(catalogue, data, import_spec())
    source = (
        f"imported from {catalogue}: {summary.individuals} individuals "
        f"({summary.new_individuals} held out as new)"
    )
else:
    if on_kaggle():
        print(f"competition {COMPETITION_SLUG} not attached: using synthetic data instead.")
    summary = synthesize(data, synth_spec())
    source = (
        f"synthesized {summary.individuals} individuals ({summary.new_test_images} "
        "test images of new ones)"
    )
print(f"{data.resolve()}: {source}")

# %% [markdown]
# `prepare` validates the folder (every error names the file, row and what to do) and
# writes the validation split: about a fifth of validation images are individuals held
# out whole, so they play `new_individual` the way unseen animals do in the test set.

# %%
competition, split = pipeline.prepare(config)
new_in_test = (
    f", {(competition.test['individual_id'] == 'new_individual').mean():.0%} of test "
    "images are new individuals"
    if competition.has_solution
    else ""
)
print(
    f"{len(competition.train)} train images of "
    f"{competition.train['individual_id'].nunique()} individuals, "
    f"{len(competition.test)} test images{new_in_test}"
)
print(f"validation split in {config.working}/{config.name}/split.csv:")
split.groupby(["role", split["val_truth"] == "new_individual"]).size().rename("images")

# %%
competition.train["species"].value_counts().rename("train images").to_frame()

# %% [markdown]
# Photos per individual are heavy-tailed, as in Happywhale: many animals have one or two
# photos (hard), a few have dozens.

# %%
import matplotlib.pyplot as plt

counts = competition.train.groupby("individual_id").size()
fig, ax = plt.subplots(figsize=(5, 2.5))
ax.hist(counts, bins=range(1, counts.max() + 2), color="steelblue")
ax.set(xlabel="train photos per individual", ylabel="individuals")
plt.show()

# %% [markdown]
# The most-photographed individuals, boxes drawn where `boxes.csv` has them (fullbody
# green, backfin red). Individuals of one species differ only by their marks.

# %%
from wildid.evaluation.plots import sample_grid

sample_grid(competition, individuals=4, per_individual=5)
plt.show()
