"""Margin-based classification heads for metric learning.

ArcFace (Deng et al. 2019) adds an angular margin to the target class's logit, which
pulls an individual's embeddings together and pushes others away on the hypersphere.
Sub-center ArcFace keeps k centres per class and uses the closest, so one individual's
two flanks, or its noisy labels, need not share one centre.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ArcFaceHead(nn.Module):
    """Cosine logits with an additive angular margin on the target class.

    `margins` may be a per-class tensor (dynamic margins); otherwise one float for all.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float = 30.0,
        margin: float | torch.Tensor = 0.3,
        subcenters: int = 1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.subcenters = subcenters
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, in_features))
        nn.init.xavier_uniform_(self.weight)
        margins = torch.as_tensor(margin, dtype=torch.float32).expand(num_classes).clone()
        self.register_buffer("margins", margins)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine to each class: the closest of its sub-centres."""
        cos = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
        if self.subcenters > 1:
            cos = cos.view(-1, self.num_classes, self.subcenters).amax(dim=-1)
        return cos

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(embeddings)
        if labels is None:
            return cos * self.scale
        m = self.margins[labels].unsqueeze(1)
        cos = cos.clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1.0 - cos.pow(2))
        with_margin = cos * torch.cos(m) - sin * torch.sin(m)
        # Past theta + m > pi the margin would raise the logit; fall back to CosFace-style.
        with_margin = torch.where(cos > torch.cos(math.pi - m), with_margin, cos - torch.sin(m) * m)
        target = F.one_hot(labels, self.num_classes).bool()
        return torch.where(target, with_margin, cos) * self.scale


def dynamic_margins(class_counts: torch.Tensor, a: float, lam: float, b: float) -> torch.Tensor:
    """Per-class margins m = a * n^(-lam) + b (n = training images of the class).

    Rare classes get larger margins: with few images the model sees them seldom, and a
    larger margin forces their few embeddings tighter (Ha et al., Google Landmarks 2020;
    Happywhale 1st place).
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float32).clamp(min=1)
    return a * counts.pow(-lam) + b
