"""Embeddings: flip views, flip modes, fp16 memory-mapped storage, resumable stage."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from wildid import cache
from wildid.config import load_config
from wildid.data.transforms import eval_transform
from wildid.infer.embed import (
    Embeddings,
    combine_views,
    embed_kind,
    embed_paths,
    embed_views,
    flip_mode,
    l2_normalise,
    load_array,
    read_embeddings,
    save_array,
    write_embeddings,
)

MEAN_STD = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class _Columns(torch.nn.Module):
    """Embedding = mean of each image column band: sensitive to left-right mirroring."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(images, (1, 4)).flatten(1) + 3.0


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        image = np.zeros((32, 48, 3), np.uint8)
        image[:, : 8 + 6 * i] = rng.integers(0, 255, 3)  # asymmetric: a bright left band
        paths.append(str(folder / f"{i}.png"))
        cv2.imwrite(paths[-1], image)
    return paths


def test_flip_mode_accepts_old_booleans():
    assert flip_mode(True) == "mean" and flip_mode(False) == "none"
    assert load_config(None, ["embed.flip_tta=true"]).embed.flip_tta == "mean"
    assert load_config(None, ["embed.flip_tta=gallery"]).embed.flip_tta == "gallery"
    with pytest.raises(ValueError):
        flip_mode("sideways")


def test_views_and_mean_tta(images):
    transform = eval_transform(32, MEAN_STD)
    plain, mirrored = embed_views(
        _Columns(), images, transform, batch_size=2, num_workers=0, progress=False
    )
    assert plain.shape == mirrored.shape == (5, 12)
    assert np.allclose(np.linalg.norm(plain, axis=1), 1, atol=1e-5)
    assert not np.allclose(plain, mirrored)
    mean = embed_paths(_Columns(), images, transform, 2, True, 0, progress=False)
    assert np.allclose(mean, l2_normalise(plain + mirrored), atol=1e-6)
    none = embed_paths(_Columns(), images, transform, 2, "none", 0, progress=False)
    assert np.allclose(none, plain, atol=1e-6)


def _views(rng, n_train=4, n_test=3, dim=6):
    unit = lambda n: l2_normalise(rng.standard_normal((n, dim)))  # noqa: E731
    return {
        "train": unit(n_train),
        "train_flip": unit(n_train),
        "test": unit(n_test),
        "test_flip": unit(n_test),
    }


def test_combine_modes_and_kinds():
    rng = np.random.default_rng(1)
    views = {"fullbody": _views(rng), "backfin": _views(rng)}
    mean = combine_views(views, "mean", "concat")
    assert mean.train.shape == (4, 12) and mean.train_source is None
    expected = l2_normalise(
        np.hstack([l2_normalise(v["train"] + v["train_flip"]) for v in views.values()])
    )
    assert np.allclose(mean.train, expected, atol=1e-6)
    gallery = combine_views(views, "gallery", "mean")
    assert gallery.train.shape == (8, 6) and gallery.test.shape == (3, 6)
    assert gallery.train_source.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert gallery.n_train_images == 4
    none = combine_views(
        {"fullbody": {"train": views["fullbody"]["train"], "test": views["fullbody"]["test"]}},
        "none",
    )
    assert np.allclose(none.train, views["fullbody"]["train"], atol=1e-6)
    with pytest.raises(ValueError, match="train_flip"):
        combine_views({"fullbody": {"train": none.train, "test": none.test}}, "mean")


def test_fp16_memmap_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    x = l2_normalise(rng.standard_normal((50, 16)))
    save_array(tmp_path / "x.npy", x)
    back = load_array(tmp_path / "x.npy")
    assert isinstance(back, np.memmap) and back.dtype == np.float16 and back.shape == (50, 16)
    assert np.allclose(back, x, atol=1e-3)
    assert np.allclose(np.linalg.norm(back.astype(np.float32), axis=1), 1, atol=2e-3)
    with pytest.raises(FileNotFoundError, match="embed"):
        load_array(tmp_path / "absent.npy")


def test_combined_files_and_index_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    emb = combine_views({"fullbody": _views(rng)}, "gallery")
    write_embeddings(tmp_path, emb, ["a", "b", "c", "d"], ["t1", "t2", "t3"])
    back, index = read_embeddings(tmp_path)
    assert index["view"].tolist().count("flip") == 4 and len(index) == 11
    assert back.train_source.tolist() == emb.train_source.tolist()
    assert np.allclose(back.train, emb.train, atol=1e-3)
    plain = Embeddings(emb.train[:4], emb.test)
    write_embeddings(tmp_path / "plain", plain, ["a", "b", "c", "d"], ["t1", "t2", "t3"])
    assert read_embeddings(tmp_path / "plain")[0].train_source is None


def test_embed_kind_skips_when_up_to_date_and_redoes_on_change(tmp_path):
    calls = []
    rng = np.random.default_rng(4)

    def embedder(paths, desc):
        calls.append(desc)
        n = len(paths)
        return l2_normalise(rng.standard_normal((n, 4))), l2_normalise(rng.standard_normal((n, 4)))

    paths = {"train": ["a", "b"], "test": ["c"]}
    first = embed_kind(tmp_path / "fullbody", "key1", paths, embedder)
    assert len(calls) == 2 and set(first) == {"train", "train_flip", "test", "test_flip"}
    again = embed_kind(tmp_path / "fullbody", "key1", paths, embedder)
    assert len(calls) == 2 and np.array_equal(again["train"], first["train"])
    embed_kind(tmp_path / "fullbody", "key2", paths, embedder)
    assert len(calls) == 4
    (tmp_path / "fullbody" / cache.RECORD).unlink()  # a killed run leaves no record
    embed_kind(tmp_path / "fullbody", "key2", paths, embedder)
    assert len(calls) == 6
