"""Ensembles: combine the stored embeddings of several runs and folds.

"concat" scales each member's unit embeddings by sqrt(weight), concatenates them and
re-normalises: the cosine of two concatenated embeddings is then exactly the weighted
mean of the members' cosines, so one search ranks by the ensemble's similarity (3
backbones x 3 folds x 512 = 4608 dimensions in the plan). "score" searches each member
separately and averages each individual's best similarity over members (an individual a
member did not list gets that member's lowest listed score); it never holds the wide
matrix, at the price of approximating the members' candidates by their top k.

Members are `<run>` (every `working/<run>/embeddings/fold*`) or `<run>/<fold>`; each is
read from its per-kind views (memory-mapped), combined with the ensemble config's flip
mode, so flip TTA can be switched on or off without re-embedding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wildid.config import Config, load_config
from wildid.data.competition import Competition, load_competition
from wildid.errors import WildidError
from wildid.infer.embed import Embeddings, combine_views, concat, load_views, write_embeddings
from wildid.infer.openset import Threshold, choose_threshold
from wildid.infer.retrieval import fuse
from wildid.layout import RunLayout
from wildid.pipeline.evaluate import Evaluation, evaluate_rankings, rank_val_test, val_images


class EnsembleError(WildidError, ValueError):
    """An ensemble member is missing or does not match the competition."""


@dataclass(frozen=True)
class Member:
    run: str
    fold: str
    weight: float
    path: Path  # working/<run>/embeddings/<fold>

    @property
    def name(self) -> str:
        return f"{self.run}/{self.fold}"


def resolve_members(config: Config) -> list[Member]:
    """Expand `ensemble.members` into (run, fold) members with their weights."""
    ec = config.ensemble
    if not ec.members:
        raise EnsembleError(
            "ensemble.members is empty; list runs such as [seed0, seed1] or "
            "folds such as [seed0/fold0]."
        )
    weights = ec.weights or [1.0] * len(ec.members)
    members = []
    for spec, weight in zip(ec.members, weights, strict=True):
        run, _, fold = spec.partition("/")
        base = RunLayout.of(config, run).all_embeddings
        folds = [fold] if fold else sorted(p.name for p in base.glob("fold*") if p.is_dir())
        if not folds or not (base / folds[0]).is_dir():
            raise EnsembleError(
                f"{base}: no embeddings for member '{spec}'; run "
                f"`wildid run CONFIG name={run}` first."
            )
        members += [Member(run, f, float(weight), base / f) for f in folds]
    return members


def _member_kinds(member: Member) -> tuple[list[str], str]:
    """The crop kinds and how to combine them, from the member run's saved config."""
    saved = member.path.parents[1] / "config.yaml"
    if saved.is_file():
        crop = load_config(saved).crop
        return list(crop.kinds), crop.combine
    kinds = sorted(p.parent.name for p in member.path.glob("*/stage.json"))
    return kinds, "concat"


def load_member(member: Member, flip_tta: str, competition: Competition) -> Embeddings:
    """A member's embeddings for the given flip mode, checked against the competition."""
    index = pd.read_csv(member.path / "index.csv", dtype={"image": str})
    for split, table in (("train", competition.train), ("test", competition.test)):
        images = index.loc[(index["split"] == split) & (index["view"] == "query"), "image"]
        if images.tolist() != table["image"].tolist():
            raise EnsembleError(
                f"{member.path / 'index.csv'}: {split} images differ from "
                f"{competition.root}; members must embed the same competition."
            )
    kinds, combine = _member_kinds(member)
    combined = combine_views({k: load_views(member.path / k) for k in kinds}, flip_tta, combine)
    # float16 in memory as on disk: 9 members of 51k x 512 then take 0.5 GiB, not 1 GiB.
    return Embeddings(
        combined.train.astype(np.float16), combined.test.astype(np.float16), combined.train_source
    )


def _members_threshold(members: list[Member], config: Config) -> float | None:
    """Mean of the members' own tuned thresholds (working/<run>/metrics.json)."""
    values = []
    for run in dict.fromkeys(m.run for m in members):
        path = RunLayout.of(config, run).metrics()
        if path.is_file():
            value = json.loads(path.read_text()).get("threshold")
            if value is not None:
                values.append(float(value))
    if not values:
        raise EnsembleError(
            "ensemble.threshold_from=members, but no member run has a "
            "threshold in its metrics.json; use threshold_from=val."
        )
    return float(np.mean(values))


def run_ensemble(config: Config, progress: bool = True) -> Evaluation:
    """Combine members, rank validation and test, choose the threshold, write and score."""
    ec = config.ensemble
    members = resolve_members(config)
    competition = load_competition(config.data, check_images=False)
    split_path = Path(ec.split) if ec.split else RunLayout.of(config, members[0].run).split
    if not split_path.is_file():
        raise EnsembleError(f"{split_path}: split not found; set ensemble.split.")
    split = pd.read_csv(split_path, dtype=str, keep_default_na=False)
    if split["image"].tolist() != competition.train["image"].tolist():
        raise EnsembleError(f"{split_path}: its images differ from {config.data}/train.csv.")
    layout = RunLayout.of(config)
    out_dir = layout.root
    embeddings = [load_member(m, config.embed.flip_tta, competition) for m in members]
    weights = [m.weight for m in members]
    if ec.method == "concat":
        try:
            combined = concat(embeddings, weights)
        except ValueError as err:
            raise EnsembleError(str(err)) from None
        write_embeddings(
            layout.all_embeddings / "ensemble",
            combined,
            competition.train["image"],
            competition.test["image"],
            config.embed.dtype,
        )
        val, truths, test = rank_val_test(config, competition, split, combined)
    else:
        ranked = [rank_val_test(config, competition, split, e) for e in embeddings]
        truths = ranked[0][1]
        val = fuse([r[0] for r in ranked], weights, config.retrieval.k)
        test = fuse([r[2] for r in ranked], weights, config.retrieval.k)
    threshold = None
    if ec.threshold_from == "members" and config.retrieval.threshold is None:
        base = choose_threshold(config.retrieval, val, truths, test)
        threshold = Threshold(_members_threshold(members, config), "members", base.curve)
    extra = {
        "members": [m.name for m in members],
        "weights": weights,
        "method": ec.method,
        "flip_tta": config.embed.flip_tta,
        "dims": int(sum(e.train.shape[1] for e in embeddings)),
    }
    return evaluate_rankings(
        config.name,
        config,
        competition,
        val,
        truths,
        test,
        out_dir,
        layout.submission(),
        threshold,
        extra,
        val_images=val_images(competition, split),
    )
