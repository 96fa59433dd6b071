"""Generalised-mean pooling: between average (p=1) and max (p->inf) pooling.

GeM is the standard pooling for instance retrieval (Radenovic et al. 2018) and was used
by every top Happywhale solution: it weights the few strongly activated locations, such
as a fin notch, more than average pooling does.
"""

from __future__ import annotations

import torch
from torch import nn


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        tensor = torch.full((1,), float(p))
        self.p = nn.Parameter(tensor) if learnable else nn.Buffer(tensor)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.to(x.dtype)
        pooled = x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.3f}"
