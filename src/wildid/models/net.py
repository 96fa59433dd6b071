"""The re-identification network: timm backbone -> GeM -> linear + BatchNorm neck.

The neck's output (512-d by default) is the embedding used for retrieval; the margin
head only exists during training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wildid.config import ConfigError, ModelConfig
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
        self.frozen: tuple[str, ...] = ()

    def freeze(self, names: Sequence[str]) -> None:
        """Keep the backbone submodules `names` (timm names: conv_stem, bn1, blocks.0, ...)
        at their current weights and BatchNorm statistics while the rest trains
        (train.freeze). Without gradients their share of the backward pass is skipped;
        the state dict keeps its keys, so a trained model loads as any other."""
        modules = dict(self.backbone.named_modules())
        unknown = [name for name in names if name not in modules or not name]
        if unknown:
            top = ", ".join(name for name, _ in self.backbone.named_children())
            raise ConfigError(
                f"train.freeze: {', '.join(map(repr, unknown))} is not a submodule of the "
                f"backbone; name its parts by timm's module names (top level: {top}; "
                "deeper ones with dots, e.g. blocks.0)."
            )
        self.frozen = tuple(names)
        for name in self.frozen:
            modules[name].requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> EmbeddingNet:
        """As nn.Module.train, but frozen submodules stay in eval mode (their BatchNorm
        statistics do not move)."""
        super().train(mode)
        modules = dict(self.backbone.named_modules())
        for name in self.frozen:
            modules[name].eval()
        return self

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
