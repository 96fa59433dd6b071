"""The `fused` method of a run (`fusion.local: true`): calibrated global + local fusion.

Each validation query is shortlisted by the run's embedding (its top `fusion.shortlist`
photos of the split's training part), matched there by RootSIFT keypoints on the animal
(`wildid.matching.local`, on the crops the model saw), and both scores are calibrated
into P(same individual) on those labelled validation pairs (`CalibratedFusion.fit`), the
matchers' weights chosen there too (`fusion.weights`, `choose_weights`); the test
queries are shortlisted against all of train and scored with the same calibrations.
Individuals are ranked by their best shortlisted photo's fused probability, and the
open-set threshold is the `retrieval.operating_point` one (MAP@5- or gmean-optimal) on
the fused validation ranking. Outputs: the `fused` method's metrics.json, threshold plot
and submission, where the run layout puts them (`RunLayout.method("fused")`).

Keypoints are cached per crop under <working>/cache/local and local pair scores in
<run>/fusion/, so a re-run (another threshold rule, say) matches nothing again.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from wildid.cache import fingerprint
from wildid.config import Config
from wildid.crop.boxes import CropSet
from wildid.data.competition import Competition
from wildid.errors import WildidError
from wildid.infer.embed import Embeddings
from wildid.infer.openset import Threshold, choose_operating_points
from wildid.infer.retrieval import Ranking, search, search_options
from wildid.layout import RunLayout
from wildid.matching.base import PAD, CosineMatcher, PooledMatcher, Shortlist
from wildid.matching.fusion import (
    CalibratedFusion,
    LocalMatcher,
    PairCache,
    choose_weights,
    rank_shortlist,
    same_pairs,
)
from wildid.matching.local import LocalConfig, extract_paths


class FusionError(WildidError, ValueError):
    """Fusion cannot be calibrated as configured (no validation queries)."""


def local_config(config: Config) -> LocalConfig:
    fc = config.fusion
    return LocalConfig(
        size=fc.size,
        features=fc.features,
        mask=fc.mask,
        upright=fc.upright,
        score=fc.score,
        neighbours=fc.neighbours,
    )


def _shortlist(gallery: np.ndarray, queries: np.ndarray, config: Config) -> Shortlist:
    _, idx = search(gallery, queries, config.fusion.shortlist, **search_options(config.retrieval))
    return Shortlist(np.where(idx >= 0, idx, PAD).astype(np.int64))


def fused_rankings(
    config: Config,
    competition: Competition,
    split: pd.DataFrame,
    embeddings: Embeddings,
    crops: CropSet,
    progress: bool = True,
) -> tuple[Ranking, list[str], Ranking, Threshold, dict]:
    """Validation ranking, its truths, test ranking, the threshold and what was fitted
    (each matcher's calibration, as JSON), all on the fused probability."""
    train, test = competition.train, competition.test
    roles = split.set_index("image").loc[train["image"], "role"].to_numpy()
    fit, val = np.flatnonzero(roles == "train"), np.flatnonzero(roles == "val")
    if len(val) == 0 or len(fit) == 0:
        raise FusionError(
            "fusion.local needs validation queries to calibrate on; set "
            "train.val_fraction > 0 (or fusion.local=false)."
        )
    labels = train["individual_id"].to_numpy()
    n_train = len(train)
    train_vectors = np.asarray(embeddings.train[:n_train], np.float32)  # query form rows
    test_vectors = np.asarray(embeddings.test, np.float32)
    train_names = [f"train/{i}" for i in train["image"]]
    test_names = [f"test/{i}" for i in test["image"]]
    vectors = {
        **dict(zip(train_names, train_vectors, strict=True)),
        **dict(zip(test_names, test_vectors, strict=True)),
    }
    kind = config.crop.kinds[0]
    paths = crops.paths("train", kind, train["image"]) + crops.paths("test", kind, test["image"])
    local = local_config(config)
    features = extract_paths(
        paths,
        None,
        local,
        f"{config.working}/cache/local",
        config.fusion.workers,
        progress,
    )
    layout = RunLayout.of(config)
    pairs = PairCache(
        dict(zip(train_names + test_names, features, strict=True)),
        local,
        config.fusion.workers,
        progress,
        layout.root / "fusion" / f"pairs_{kind}_{fingerprint(asdict(local))}.csv",
    )
    fusion = CalibratedFusion(
        [
            CosineMatcher(vectors, "global"),
            PooledMatcher(
                LocalMatcher(pairs, config.fusion.normalise),
                dict(zip(train_names, (str(v) for v in labels), strict=True)),
                config.fusion.pool,
            ),
        ]
    )
    fit_names = [train_names[i] for i in fit]
    val_list = _shortlist(train_vectors[fit], train_vectors[val], config)
    val_scored = fusion.score([train_names[i] for i in val], fit_names, val_list)
    truths = split.set_index("image").loc[train["image"].iloc[val], "val_truth"].tolist()
    same = same_pairs(val_list, labels[fit], truths)
    fitted = fusion.fit(val_scored, same, "validation")
    if config.fusion.weights == "auto":
        fitted = fitted.with_weights(choose_weights(fusion, val_scored, same, labels[fit], truths))
    val_fused = fitted.calibrate(val_scored)
    test_list = _shortlist(train_vectors, test_vectors, config)
    test_fused = fitted(test_names, train_names, test_list)
    k = config.retrieval.k
    val_ranking = rank_shortlist(val_list, val_fused.fused, labels[fit], k)
    test_ranking = rank_shortlist(test_list, test_fused.fused, labels, k)
    points = choose_operating_points(val_ranking, truths)
    threshold = Threshold(
        points.threshold(config.retrieval.operating_point),
        f"tuned ({config.retrieval.operating_point}, fused probability)",
        [(row["threshold"], row["map5"]) for row in points.curve],
    )
    extra = {
        "calibrations": {n: c.to_json() for n, c in fitted.calibrations.items()},
        "weights": dict(zip(fitted.names, fitted.weights, strict=True)),
        "operating_points": {"map5": points.map5, "gmean": points.gmean},
        "shortlist": config.fusion.shortlist,
        "local": asdict(local),
    }
    return val_ranking, truths, test_ranking, threshold, extra
