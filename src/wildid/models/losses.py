"""Metric-learning losses behind one interface, chosen by `loss.name`.

Every loss is an nn.Module with `forward(embeddings, labels) -> scalar loss` and an
optional `class_scores(embeddings)` (cosine to each class, for losses that learn class
centres or proxies), so the engine trains any of them the same way and they can be
compared on the same data, as pytorch-metric-learning does. Parameters a loss owns
(ArcFace centres, proxies) are trained at `train.head_lr`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import nn

from wildid.config import LossConfig
from wildid.models.heads import ArcFaceHead, dynamic_margins


class MetricLoss(nn.Module, ABC):
    """Base of every loss. `needs_m_per_class`: useless on batches without positives."""

    needs_m_per_class = False

    @abstractmethod
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of a batch of embeddings with their integer class labels."""

    def class_scores(self, embeddings: torch.Tensor) -> torch.Tensor | None:
        return None


class ArcFaceLoss(MetricLoss):
    """(Sub-center) ArcFace with a fixed margin or per-class dynamic margins."""

    def __init__(
        self, config: LossConfig, num_classes: int, class_counts: Sequence[int], embedding_dim: int
    ) -> None:
        super().__init__()
        margin: float | torch.Tensor = config.margin
        if config.dynamic_margin:
            margin = dynamic_margins(
                torch.as_tensor(class_counts),
                config.margin_a,
                config.margin_lambda,
                config.margin_b,
            )
        self.head = ArcFaceHead(embedding_dim, num_classes, config.scale, margin, config.subcenters)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.head(embeddings, labels), labels)

    def class_scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.head.cosine(embeddings)


class ProxyAnchorLoss(MetricLoss):
    """pytorch-metric-learning's ProxyAnchorLoss (Kim et al. 2020): one proxy per class."""

    def __init__(
        self, config: LossConfig, num_classes: int, class_counts: Sequence[int], embedding_dim: int
    ) -> None:
        super().__init__()
        self.loss = pml_losses.ProxyAnchorLoss(
            num_classes, embedding_dim, margin=config.proxy_margin, alpha=config.proxy_alpha
        )

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings.float(), labels)

    def class_scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings.float()), F.normalize(self.loss.proxies))


class TripletLoss(MetricLoss):
    """pytorch-metric-learning's triplet margin loss on semi-hard triplets of the batch."""

    needs_m_per_class = True

    def __init__(
        self, config: LossConfig, num_classes: int, class_counts: Sequence[int], embedding_dim: int
    ) -> None:
        super().__init__()
        self.loss = pml_losses.TripletMarginLoss(margin=config.triplet_margin)
        self.miner = pml_miners.TripletMarginMiner(
            margin=config.triplet_margin, type_of_triplets="semihard"
        )

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.float()
        return self.loss(embeddings, labels, self.miner(embeddings, labels))


LOSSES: dict[str, Callable[..., MetricLoss]] = {
    "arcface": ArcFaceLoss,
    "proxy_anchor": ProxyAnchorLoss,
    "triplet": TripletLoss,
}


def build_loss(
    config: LossConfig, num_classes: int, class_counts: Sequence[int], embedding_dim: int
) -> MetricLoss:
    """The loss named by `config.name`; `class_counts[i]` = training images of class i."""
    if config.name not in LOSSES:
        raise ValueError(f"loss.name '{config.name}' unknown; choose one of {sorted(LOSSES)}.")
    if len(class_counts) != num_classes:
        raise ValueError(f"{len(class_counts)} class counts for {num_classes} classes.")
    return LOSSES[config.name](config, num_classes, class_counts, embedding_dim)
