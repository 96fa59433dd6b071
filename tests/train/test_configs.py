"""The shipped training configs: valid, and naming backbones timm can build."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from wildid.config import load_config
from wildid.models.backbones import SHIPPED

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GPU = sorted((CONFIGS / "happywhale").glob("*.yaml"))
CPU = sorted((CONFIGS / "cpu").glob("*.yaml"))


def test_the_plan_is_all_there() -> None:
    assert {p.stem for p in GPU} == {"tf_efficientnet_b6_ns", "tf_efficientnetv2_l", "eca_nfnet_l2"}
    assert {p.stem for p in CPU} == {"mobilenetv2_100", "efficientnet_lite0"}


@pytest.mark.filterwarnings("ignore:Mapping deprecated model name")
@pytest.mark.parametrize("path", GPU + CPU, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_builds_its_backbone(path: Path) -> None:
    config = load_config(path)
    assert config.model.backbone == path.stem
    with torch.device("meta"):  # architecture only: no memory, no weights
        model = timm.create_model(config.model.backbone, pretrained=False, num_classes=0)
    assert model.num_features > 0
    if path in GPU:
        assert 512 <= config.train.image_size <= 768
        assert config.loss.subcenters > 1 and config.loss.dynamic_margin
        assert config.train.folds > 1
    else:
        assert config.model.backbone in SHIPPED  # trains offline on a CPU
