"""Ensembles: weighted concatenation, score fusion, and `wildid ensemble` on stored views."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wildid.cli import app
from wildid.config import load_config, save_config
from wildid.data.competition import write_tables
from wildid.data.folds import split_validation
from wildid.infer.embed import Embeddings, l2_normalise, save_array, write_embeddings
from wildid.io import write_csv
from wildid.pipeline.ensemble import EnsembleError, concat, resolve_members, run_ensemble


def test_concat_cosine_is_the_weighted_mean_cosine():
    rng = np.random.default_rng(0)
    a = [l2_normalise(rng.standard_normal((6, 8))) for _ in range(2)]
    b = [l2_normalise(rng.standard_normal((6, 4))) for _ in range(2)]
    members = [Embeddings(a[0], a[1]), Embeddings(b[0], b[1])]
    out = concat(members, [3.0, 1.0])
    assert out.train.shape == (6, 12)
    assert np.allclose(np.linalg.norm(out.train, axis=1), 1, atol=1e-6)
    expected = (3 * a[1] @ a[0].T + 1 * b[1] @ b[0].T) / 4
    assert np.allclose(out.test @ out.train.T, expected, atol=1e-5)
    equal = concat(members, [1.0, 1.0])
    assert np.allclose(equal.test @ equal.train.T, (a[1] @ a[0].T + b[1] @ b[0].T) / 2, atol=1e-5)


def test_concat_refuses_mixed_gallery_layouts():
    x = l2_normalise(np.ones((2, 3)))
    with pytest.raises(ValueError, match="flip mode"):
        concat([Embeddings(x, x), Embeddings(np.vstack([x, x]), x, np.array([0, 1, 0, 1]))], [1, 1])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A competition and two members' stored views: centres + member-specific noise."""
    root = tmp_path_factory.mktemp("ens")
    rng = np.random.default_rng(1)
    ids = [f"ind{i:02d}" for i in range(25)]
    train_ids = [i for i in ids[:20] for _ in range(4)]
    train = pd.DataFrame(
        {
            "image": [f"tr{n}.jpg" for n in range(len(train_ids))],
            "species": "whale",
            "individual_id": train_ids,
        }
    )
    test_ids = ids[:20] + ids[20:]  # 5 individuals never in train
    test = pd.DataFrame(
        {
            "image": [f"te{n}.jpg" for n in range(len(test_ids))],
            "species": "whale",
            "individual_id": test_ids,
        }
    )
    data = root / "data"
    write_tables(data, train, test)
    working = root / "working"
    centres = {i: rng.standard_normal(16) for i in ids}
    split = split_validation(train, 0.25, 0.3, seed=0)
    for m, run in enumerate(("runA", "runB")):
        config = load_config(None, [f"name={run}", f"working={working}", f"data={data}"])
        save_config(config, working / run / "config.yaml")
        write_csv(split, working / run / "split.csv")
        (working / run / "metrics.json").write_text(json.dumps({"threshold": 0.3 + 0.1 * m}))
        fold = working / run / "embeddings" / "fold0"

        def noisy(names):
            return l2_normalise(
                np.stack([centres[n] + 1.2 * rng.standard_normal(16) for n in names])
            )

        views = {"train": noisy(train_ids), "test": noisy(test_ids)}
        views |= {"train_flip": noisy(train_ids), "test_flip": noisy(test_ids)}
        for name, array in views.items():
            save_array(fold / "fullbody" / f"{name}.npy", array)
        write_embeddings(
            fold, Embeddings(views["train"], views["test"]), train["image"], test["image"]
        )
    return {"data": data, "working": working, "submissions": root / "subs"}


def _config(ws, *overrides):
    return load_config(
        None,
        [
            f"data={ws['data']}",
            f"working={ws['working']}",
            f"submissions={ws['submissions']}",
            *overrides,
        ],
    )


def test_members_expand_runs_to_folds(workspace):
    config = _config(workspace, "ensemble.members=[runA, runB/fold0]", "ensemble.weights=[2, 1]")
    members = resolve_members(config)
    assert [(m.name, m.weight) for m in members] == [("runA/fold0", 2.0), ("runB/fold0", 1.0)]
    with pytest.raises(EnsembleError, match="runC"):
        resolve_members(_config(workspace, "ensemble.members=[runC]"))
    with pytest.raises(Exception, match="one weight per member"):
        _config(workspace, "ensemble.members=[runA]", "ensemble.weights=[1, 2]")


@pytest.mark.parametrize("method", ["concat", "score"])
def test_run_ensemble_beats_its_members(workspace, method):
    single = [
        run_ensemble(
            _config(workspace, f"name=one{r}", f"ensemble.members=[{r}]", "embed.flip_tta=none")
        ).test_map5
        for r in ("runA", "runB")
    ]
    both = run_ensemble(
        _config(
            workspace,
            f"name=both_{method}",
            f"ensemble.method={method}",
            "ensemble.members=[runA, runB]",
            "embed.flip_tta=mean",
        )
    )
    assert both.test_map5 > max(single)
    assert both.details["members"] == ["runA/fold0", "runB/fold0"]
    assert both.submission.is_file() and both.submission.name == f"both_{method}.csv"
    if method == "concat":
        stored = np.load(
            workspace["working"] / f"both_{method}" / "embeddings" / "ensemble" / "train.npy",
            mmap_mode="r",
        )
        assert stored.shape == (80, 32) and stored.dtype == np.float16


def test_threshold_from_members_and_gallery_flip(workspace):
    result = run_ensemble(
        _config(
            workspace,
            "name=mem",
            "ensemble.members=[runA, runB]",
            "ensemble.threshold_from=members",
            "embed.flip_tta=gallery",
        )
    )
    assert result.threshold == pytest.approx(0.35)
    assert result.details["threshold_source"] == "members" and result.curve
    metrics = json.loads((workspace["working"] / "mem" / "metrics.json").read_text())
    assert metrics["dims"] == 32 and metrics["flip_tta"] == "gallery"


def test_cli_ensemble(workspace, tmp_path):
    config = tmp_path / "ens.yaml"
    config.write_text("ensemble: {members: [runA], method: concat}\n")
    result = CliRunner().invoke(
        app,
        [
            "ensemble",
            str(config),
            f"data={workspace['data']}",
            f"working={workspace['working']}",
            f"submissions={workspace['submissions']}",
            "name=cli",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "MAP@5 cli" in result.output
