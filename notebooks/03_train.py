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
# %%
# Find the repository (the folder above holding pyproject.toml), import wildid from its
# src/, and work in the repository root (on Kaggle: /kaggle/working; WILDID_WORKDIR wins).
import os
import sys
from pathlib import Path


def find_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "src" / "wildid").is_dir():
            return folder
    raise FileNotFoundError(f"no wildid repository at or above {start}: start Jupyter inside "
                            "the repository, or set WILDID_ROOT to its path.")


ROOT = Path(os.environ.get("WILDID_ROOT") or find_root(Path.cwd())).resolve()
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
KAGGLE = Path("/kaggle/input").is_dir()
WORKDIR = Path(os.environ.get("WILDID_WORKDIR") or ("/kaggle/working" if KAGGLE else ROOT))
os.chdir(WORKDIR)
print(f"repository {ROOT}\nworking in {WORKDIR}" + ("  (Kaggle)" if KAGGLE else ""))

# %%
from wildid import pipeline
from wildid.notebook import notebook_config

config = notebook_config(ROOT)
print(f"config {config.name}: data {config.data}, outputs {config.run_dir}, "
      f"submissions {config.submissions}")

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
