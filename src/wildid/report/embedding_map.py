"""A 2-D map of a run's train-image embeddings (UMAP), for the report and notebook 04.

Every train photo of the run's (fold 0) split is a point: the training part as dots, the
validation queries as triangles, held-out individuals (validation truth new_individual,
the test set's unseen animals) as crosses. UMAP (umap-learn, the `report` extra) keeps
neighbourhoods, so an individual whose photos form one island is one the model
recognises. Without umap-learn the map is a PCA projection and says so (`note`): PCA
keeps only the two widest directions, so islands merge that UMAP would separate.

With very few photos UMAP's neighbourhood is shrunk to fit (`n_neighbors` at most
points - 1); large runs are mapped on a seeded sample of `max_points` photos.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wildid.data.competition import NEW_INDIVIDUAL
from wildid.report.collect import RunFiles

MAX_POINTS = 4000
N_NEIGHBORS = 15


@dataclass(frozen=True)
class EmbeddingMap:
    """Map coordinates and what each point is."""

    points: pd.DataFrame  # image, individual_id, species, role (train/val), held_out, x, y
    method: str  # umap, pca
    note: str  # how it was made (sample, neighbours, fallback)


def project(rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str, str]:
    """(n, 2) coordinates, the method ("umap" or "pca") and a note saying how."""
    rows = np.asarray(rows, dtype=np.float32)
    n = len(rows)
    if n < 4:
        return _pca(rows), "pca", f"PCA: {n} photos are too few for UMAP."
    try:
        import umap
    except ImportError:
        return (
            _pca(rows),
            "pca",
            "PCA, not UMAP: umap-learn is not installed (pip install 'wildid[report]'); "
            "PCA merges groups UMAP would keep apart.",
        )
    neighbours = max(2, min(N_NEIGHBORS, n - 1))
    reducer = umap.UMAP(
        n_neighbors=neighbours,
        min_dist=0.1,
        random_state=seed,
        init="spectral" if n > 2 * neighbours else "random",
    )
    with warnings.catch_warnings():  # seeded (single-thread) and small-data notices
        warnings.simplefilter("ignore")
        xy = reducer.fit_transform(rows)
    return np.asarray(xy, dtype=float), "umap", f"UMAP, {neighbours} neighbours, seed {seed}"


def _pca(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=0, keepdims=True)
    if len(rows) < 2:
        return np.zeros((len(rows), 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    return np.hstack([xy, np.zeros((len(rows), 2 - xy.shape[1]))])


def embedding_map(files: RunFiles, max_points: int = MAX_POINTS) -> EmbeddingMap | None:
    """The map of a run's stored fold-0 train embeddings, or None without them."""
    emb, split = files.embeddings, files.split
    if emb is None or split is None:
        return None
    table = split[split["image"].isin(set(emb.train_images))].reset_index(drop=True)
    if table.empty:
        return None
    seed = files.config.train.seed if files.config is not None else 0
    note = ""
    if len(table) > max_points:
        pick = np.sort(np.random.default_rng(seed).permutation(len(table))[:max_points])
        note = f"; a random sample of {max_points} of {len(table)} photos"
        table = table.iloc[pick].reset_index(drop=True)
    lookup = {image: i for i, image in enumerate(emb.train_images)}
    rows = emb.train[[lookup[i] for i in table["image"]]]
    xy, method, how = project(rows, seed)
    held_out = (table["role"] == "val") & (table["val_truth"] == NEW_INDIVIDUAL)
    points = pd.DataFrame(
        {
            "image": table["image"],
            "individual_id": table["individual_id"],
            "species": table.get("species", "?"),
            "role": table["role"],
            "held_out": held_out.to_numpy(),
            "x": xy[:, 0],
            "y": xy[:, 1],
        }
    )
    return EmbeddingMap(points, method, how + note)
