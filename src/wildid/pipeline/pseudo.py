"""Pseudo-labels: confident test predictions join train for the next training round.

Test images whose best match is strong (top-1 similarity at least `pseudo.threshold`, and
ahead of the runner-up by `pseudo.margin`) are labelled with that individual. Top
Happywhale solutions gained from a round of this: the test set shows the same animals in
new conditions, which is exactly what train lacks.

Output: a new competition folder (the Happywhale layout, so `wildid run ... data=DIR`
trains on it unchanged) whose train.csv holds the original rows plus the pseudo-labelled
test images, linked into train_images/ under a `pseudo_` prefix (an image name may not be
in both train and test), and `pseudo.csv`, the extra rows with their scores.
Test images, sample_submission.csv and solution.csv are kept, so the next round is
scored on the same test set (a pseudo-labelled image's own score then reflects its label
being trained on: compare rounds on the images left unlabelled, or on validation).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from wildid.data.competition import BOX_COLUMNS, TRAIN_COLUMNS, Competition, DataError
from wildid.infer.retrieval import PAD, Ranking
from wildid.io import write_csv
from wildid.layout import RunLayout

PREFIX = "pseudo_"
MARKER = "pseudo.csv"  # a folder holding it was written here, and may be replaced


def select_pseudo_labels(
    competition: Competition, ranking: Ranking, threshold: float, margin: float = 0.0
) -> pd.DataFrame:
    """Test images confident enough to label: image, species, individual_id, score, margin.

    `ranking` ranks the test images (in competition.test order) against all of train.
    """
    if len(ranking) != len(competition.test):
        raise ValueError(
            f"ranking has {len(ranking)} rows for {len(competition.test)} test "
            "images; rank the test set in competition.test order."
        )
    scores = ranking.scores
    top = scores[:, 0] if scores.shape[1] else np.full(len(ranking), -np.inf)
    second = scores[:, 1] if scores.shape[1] > 1 else np.full(len(ranking), -np.inf)
    codes = ranking.codes[:, 0] if scores.shape[1] else np.full(len(ranking), PAD)
    gap = np.where(np.isfinite(second), top - second, np.inf)
    keep = (codes != PAD) & (top >= threshold) & (gap >= margin)
    ids = ranking.individuals[codes[keep]].astype(str)
    species = competition.train.drop_duplicates("individual_id").set_index("individual_id")
    return pd.DataFrame(
        {
            "image": competition.test["image"].to_numpy()[keep],
            "species": species.loc[ids, "species"].to_numpy(),
            "individual_id": ids,
            "score": top[keep].round(6),
            "margin": np.minimum(gap[keep], 9.0).round(6),
        }
    )


def _place(source: Path, target: Path, link: str) -> None:
    if link == "symlink":
        target.symlink_to(source.resolve())
    elif link == "hardlink":
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def write_pseudo_competition(
    competition: Competition, pseudo: pd.DataFrame, out: str | Path, link: str = "symlink"
) -> Path:
    """Write a competition folder: train plus pseudo-labelled test images (see module doc).

    Built beside `out` and moved into place when complete. An existing `out` is replaced
    only if it holds `pseudo.csv` (it was written here); anything else is an error.
    """
    out = Path(out)
    if out.exists() and not (out / MARKER).is_file():
        raise DataError(
            f"{out}: exists and is not a pseudo-label folder; choose another "
            "pseudo.out or remove it."
        )
    renamed = PREFIX + pseudo["image"].astype(str)
    clash = set(renamed) & set(competition.train["image"])
    if clash:
        raise DataError(
            f"{competition.root / 'train.csv'}: image '{sorted(clash)[0]}' "
            f"already exists; pseudo-labelled names would collide."
        )
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in ("train_images", "test_images"):
        (tmp / folder).mkdir(parents=True)
    for image in competition.train["image"]:
        _place(competition.image_path("train", image), tmp / "train_images" / image, link)
    for image, new_name in zip(pseudo["image"], renamed, strict=True):
        _place(competition.image_path("test", image), tmp / "train_images" / new_name, link)
    for image in competition.test["image"]:
        _place(competition.image_path("test", image), tmp / "test_images" / image, link)
    extra = pseudo.assign(image=renamed)
    write_csv(
        pd.concat([competition.train[list(TRAIN_COLUMNS)], extra[list(TRAIN_COLUMNS)]]),
        tmp / "train.csv",
    )
    for name in ("sample_submission.csv", "solution.csv"):
        if (competition.root / name).is_file():
            shutil.copy2(competition.root / name, tmp / name)
    if competition.boxes is not None:
        boxes = competition.boxes[list(BOX_COLUMNS)]
        test_boxes = boxes[boxes["image"].isin(set(pseudo["image"]))]
        write_csv(
            pd.concat([boxes, test_boxes.assign(image=PREFIX + test_boxes["image"])]),
            tmp / "boxes.csv",
        )
    write_csv(pseudo.assign(source_image=pseudo["image"], image=renamed), tmp / MARKER)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def pseudo_round(config, competition: Competition, test_ranking: Ranking) -> dict:
    """The pipeline's hook: write the next round's folder when pseudo.threshold is set."""
    pc = config.pseudo
    pseudo = select_pseudo_labels(competition, test_ranking, pc.threshold, pc.margin)
    out = Path(pc.out) if pc.out else RunLayout.of(config).pseudo
    write_pseudo_competition(competition, pseudo, out, pc.link)
    summary = {"images": len(pseudo), "folder": str(out)}
    if competition.has_solution and len(pseudo):
        truth = competition.test.set_index("image").loc[pseudo["image"], "individual_id"]
        summary["precision"] = float((truth.to_numpy() == pseudo["individual_id"]).mean())
    print(
        f"pseudo-labels: {len(pseudo)} test images -> {out}; next round: "
        f"wildid run CONFIG data={out}"
    )
    return summary
