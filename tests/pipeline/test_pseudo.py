"""Pseudo-labels: confident test images become a loadable next-round competition."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from wildid.config import load_config
from wildid.data.competition import DataError, load_competition, write_tables
from wildid.infer.retrieval import Ranking
from wildid.pipeline.pseudo import (
    PREFIX,
    pseudo_round,
    select_pseudo_labels,
    write_pseudo_competition,
)


@pytest.fixture
def competition(tmp_path):
    root = tmp_path / "comp"
    train = pd.DataFrame(
        {
            "image": ["a1.jpg", "a2.jpg", "b1.jpg"],
            "species": ["whale", "whale", "dolphin"],
            "individual_id": ["A", "A", "B"],
        }
    )
    test = pd.DataFrame(
        {
            "image": ["t1.jpg", "t2.jpg", "t3.jpg"],
            "species": ["whale", "dolphin", "whale"],
            "individual_id": ["A", "B", "C"],
        }
    )
    write_tables(root, train, test)
    boxes = pd.DataFrame(
        {"image": ["a1.jpg", "t1.jpg"], "kind": "fullbody", "x1": 0, "y1": 0, "x2": 4, "y2": 4}
    )
    boxes.to_csv(root / "boxes.csv", index=False)
    for split, table in (("train", train), ("test", test)):
        (root / f"{split}_images").mkdir()
        for image in table["image"]:
            cv2.imwrite(str(root / f"{split}_images" / image), np.zeros((8, 8, 3), np.uint8))
    return load_competition(root)


RANKING = Ranking.from_lists(
    [["A", "B"], ["B", "A"], ["A", "B"]], [[0.9, 0.2], [0.8, 0.75], [0.4, 0.3]]
)


def test_selects_confident_images_with_margin(competition):
    chosen = select_pseudo_labels(competition, RANKING, threshold=0.7)
    assert chosen["image"].tolist() == ["t1.jpg", "t2.jpg"]
    assert chosen["individual_id"].tolist() == ["A", "B"]
    assert chosen["species"].tolist() == ["whale", "dolphin"]
    strict = select_pseudo_labels(competition, RANKING, threshold=0.7, margin=0.1)
    assert strict["image"].tolist() == ["t1.jpg"]
    with pytest.raises(ValueError, match="test images"):
        select_pseudo_labels(competition, Ranking.from_lists([["A"]], [[0.9]]), 0.5)


@pytest.mark.parametrize("link", ["symlink", "copy"])
def test_written_folder_loads_as_a_competition(competition, tmp_path, link):
    chosen = select_pseudo_labels(competition, RANKING, threshold=0.7)
    out = write_pseudo_competition(competition, chosen, tmp_path / "round2", link)
    nxt = load_competition(out)
    assert len(nxt.train) == 5 and len(nxt.test) == 3 and nxt.has_solution
    extra = nxt.train[nxt.train["image"].str.startswith(PREFIX)]
    assert extra["individual_id"].tolist() == ["A", "B"]
    assert (out / "train_images" / f"{PREFIX}t1.jpg").is_file()
    assert f"{PREFIX}t1.jpg" in set(nxt.boxes["image"])
    table = pd.read_csv(out / "pseudo.csv")
    assert table["source_image"].tolist() == ["t1.jpg", "t2.jpg"]
    write_pseudo_competition(competition, chosen.head(1), out, link)  # rewrite own folder
    assert len(load_competition(out).train) == 4


def test_refuses_to_replace_a_foreign_folder(competition, tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError, match="not a pseudo-label folder"):
        write_pseudo_competition(
            competition, select_pseudo_labels(competition, RANKING, 0.7), tmp_path / "mine"
        )


def test_pipeline_hook_reports_precision(competition, tmp_path):
    config = load_config(
        None, [f"working={tmp_path / 'w'}", "name=r1", "pseudo.threshold=0.7", "pseudo.link=copy"]
    )
    summary = pseudo_round(config, competition, RANKING)
    assert summary == {
        "images": 2,
        "folder": str(tmp_path / "w" / "r1" / "pseudo"),
        "precision": 1.0,
    }
