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
# %%
# Import wildid from the repository's src/ (the folder at or above this one that holds it;
# WILDID_ROOT wins), then work in the repository root (Kaggle: /kaggle/working).
import os
import sys
from pathlib import Path

ROOT = Path(os.environ.get("WILDID_ROOT") or next(
    (p for p in (Path.cwd(), *Path.cwd().parents) if (p / "src" / "wildid").is_dir()), Path.cwd()
)).resolve()
sys.path.insert(0, str(ROOT / "src"))
from wildid.notebook import enter_workdir  # noqa: E402  (importable only from here on)

WORKDIR = enter_workdir(ROOT)

# %%
from wildid import pipeline
from wildid.notebook import notebook_config

config = notebook_config(ROOT)
print(f"config {config.name}: data {config.data}, outputs {config.run_dir}, "
      f"submissions {config.submissions}")

# %%
from wildid.notebook import trained_embeddings
from wildid.submission import validate_against_competition

competition, split = pipeline.prepare(config)
crops = pipeline.crop(config, competition, progress=False)
embeddings = trained_embeddings(config, competition, crops, split)
result = pipeline.evaluate("trained", config, competition, split, embeddings, config.run_dir)
submission = result.submission
validate_against_competition(submission, competition)  # raises, naming row and fix
print(f"{submission}: valid, {len(competition.test)} test images")

# %%
import pandas as pd
from IPython.display import display

pd.read_csv(submission).head()

# %%
from wildid.metrics import score_breakdown

solution = competition.root / "solution.csv"
if solution.is_file():
    display(score_breakdown(submission, solution))
else:
    print("no solution.csv (the real competition): the score comes from Kaggle")

# %% [markdown]
# The same steps on the command line, and the upload (shown, not run: uploading needs
# your Kaggle API token and is your decision):

# %%
import shlex

from wildid.notebook import env_overrides

data = Path(config.data)
run_args = shlex.join([os.environ.get("WILDID_CONFIG") or "configs/mini.yaml",
                       f"data={data}", *env_overrides()])
print(f"""\
wildid run {run_args}
wildid validate {submission} --data {data}
wildid score {submission} {data / "solution.csv"}
kaggle competitions submit -c happy-whale-and-dolphin -f {submission} -m "wildid {config.name}"
""")
