"""The re-identification network: timm backbone -> GeM -> linear + BatchNorm neck.

The neck's output (512-d by default) is the embedding used for retrieval; the margin
head only exists during training.
"""

from __future__ import annotations

import torch
from torch import nn

from wildid.config import ModelConfig
from wildid.models.backbones import create_backbone
from wildid.models.pooling import GeM


class EmbeddingNet(nn.Module):
    def __init__(self, config: ModelConfig, pretrained: str | None = None) -> None:
        super().__init__()
        backbone, self.weights_source = create_backbone(
            config.backbone, pretrained or config.pretrained, config.weights_dir
        )
        backbone.reset_classifier(0, global_pool="")
        self.backbone = backbone
        self.pool = GeM(config.gem_p, learnable=config.gem_learnable)
        features = backbone.num_features
        self.dropout = nn.Dropout(config.dropout)
        self.neck = nn.Sequential(
            nn.Linear(features, config.embedding_dim, bias=False),
            nn.BatchNorm1d(config.embedding_dim),
        )
        self.data_config = dict(backbone.pretrained_cfg or {})

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        cfg = self.data_config
        return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(
            cfg.get("std", (0.229, 0.224, 0.225))
        )

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features after GeM: the untrained baseline's embedding."""
        return self.pool(self.backbone.forward_features(images)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.dropout(self.pooled(images)))

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.pool.parameters(), *self.neck.parameters()]
