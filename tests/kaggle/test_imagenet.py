"""timm ImageNet weights from a (fake) Hugging Face cache, in the model.weights_dir layout."""

from __future__ import annotations

import json

import pytest
import timm
from safetensors.torch import save_file
from typer.testing import CliRunner

from wildid.cli import app
from wildid.kaggle.imagenet import ImagenetWeightsError, hub_id, imagenet_weights
from wildid.models.backbones import create_backbone

TINY = "test_efficientnet"  # timm's own test model: small, real pretrained cfg


def _cache(root):
    """A hub cache holding TINY's weights the way huggingface_hub lays them out."""
    repo = root / ("models--" + hub_id(TINY).replace("/", "--"))
    blob = repo / "blobs" / "abc123"
    blob.parent.mkdir(parents=True)
    model = timm.create_model(TINY, pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(blob))
    snapshot = repo / "snapshots" / "rev1"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("rev1")
    return root


def test_hub_ids_of_the_gpu_configs_resolve_offline() -> None:
    assert hub_id("tf_efficientnet_b6_ns") == "timm/tf_efficientnet_b6.ns_jft_in1k"
    assert hub_id("tf_efficientnetv2_l").startswith("timm/tf_efficientnetv2_l.")
    assert hub_id("eca_nfnet_l2").startswith("timm/eca_nfnet_l2.")
    with pytest.raises(ImagenetWeightsError, match="no pretrained weights"):
        hub_id("no_such_net")


def test_dataset_loads_through_weights_dir(tmp_path) -> None:
    out = tmp_path / "ds"
    made = imagenet_weights(out, [TINY], "alice", cache=_cache(tmp_path / "hub"))
    target = out / TINY / "model.safetensors"
    assert target.is_file() and not target.is_symlink()
    assert json.loads((out / "dataset-metadata.json").read_text())["id"] == made.slug
    assert (
        "model.weights_dir=/kaggle/input/wildid-imagenet-weights" in (out / "README.md").read_text()
    )
    _, source = create_backbone(TINY, "auto", str(out))
    assert source == str(target)


def test_missing_model_says_how_to_fill_the_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    result = CliRunner().invoke(
        app, ["kaggle", "imagenet-weights", str(tmp_path / "o"), "--model", TINY, "--user", "a"]
    )
    assert result.exit_code == 2
    assert f"timm.create_model('{TINY}', pretrained=True)" in result.output
    assert str(tmp_path / "hub") in result.output and not (tmp_path / "o").exists()
