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
# # 04 · Embed: every train and test image becomes a unit vector
#
# The trained model embeds each crop (with horizontal-flip test-time augmentation when
# `embed.flip_tta`); crop kinds are concatenated or averaged (`crop.combine`). Vectors are
# saved to `working/<name>/embeddings/fold0/` (`train.npy`, `test.npy`, `index.csv`), where
# notebooks 05 and 06 load them.
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
from wildid.notebook import embeddings_dir
from wildid.train.engine import load_trained, resolve_device

competition, split = pipeline.prepare(config)
crops = pipeline.crop(config, competition, progress=False)
best = pipeline.train(config, crops, split, progress=False)[0]  # done in 03: no training
model = load_trained(config, best, resolve_device(config.train.device))
embeddings = pipeline.embed(config, competition, crops, model, embeddings_dir(config))
print(f"train {embeddings.train.shape}, test {embeddings.test.shape} -> {embeddings_dir(config)}")

# %% [markdown]
# Does the model separate individuals? Cosine similarity of pairs of train images (a
# sample of them) of the same individual against pairs of different individuals: the
# less the two histograms overlap, the easier retrieval and the `new_individual`
# decision become.

# %%
import matplotlib.pyplot as plt
import numpy as np

rng = np.random.default_rng(0)  # at most 2000 images: the matrix grows with the square
pick = np.sort(rng.permutation(len(embeddings.train))[:2000])
ids = competition.train["individual_id"].to_numpy()[pick]
similarity = embeddings.train[pick] @ embeddings.train[pick].T
upper = np.triu(np.ones_like(similarity, dtype=bool), k=1)
same = (ids[:, None] == ids[None, :]) & upper
fig, ax = plt.subplots(figsize=(5, 2.6))
ax.hist(similarity[upper & ~same], bins=50, density=True, alpha=0.6, label="different")
ax.hist(similarity[same], bins=50, density=True, alpha=0.6, label="same individual")
ax.set(xlabel="cosine similarity", ylabel="density")
ax.legend()
plt.show()

# %% [markdown]
# The report's view of the same embeddings: a UMAP map of the train photos (coloured by
# the most photographed individuals and by species; triangles are validation queries,
# crosses the held-out individuals), and how well a k-means clustering of the validation
# queries recovers their individuals (AMI: 0 for chance, NMI: 1 when perfect).

# %%
from wildid.layout import RunLayout
from wildid.report.collect import read_run
from wildid.report.embedding_map import embedding_map
from wildid.report.figures import embedding_quality
from wildid.report.pictures import embedding_map_figure, show

files = read_run(RunLayout.of(config))
quality = embedding_quality(files)
if quality is not None:
    print(
        f"validation queries: AMI {quality.ami:.3f}, NMI {quality.nmi:.3f} "
        f"({quality.points} photos of {quality.clusters} individuals)"
    )
emb_map = embedding_map(files)
if emb_map is not None:
    print(emb_map.note)
    show(embedding_map_figure(emb_map, title=config.name))
