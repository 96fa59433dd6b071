"""Generalised-mean pooling: between average (p=1) and max (p->inf) pooling.

GeM is the standard pooling for instance retrieval (Radenovic et al. 2018) and was used
by every top Happywhale solution: it weights the few strongly activated locations, such
as a fin notch, more than average pooling does.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        tensor = torch.full((1,), float(p))
        self.p = nn.Parameter(tensor) if learnable else nn.Buffer(tensor)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(mean of x^p)^(1/p) over the spatial positions, computed in the log domain in
        float32: exp(logsumexp(p log x) / p - log(n) / p). The direct form underflows where
        a channel is weak everywhere: with a learnt p near 8, (1e-6)^p is 0 in float32, and
        0^(1/p) has an infinite gradient, which made p's gradient NaN and a nyala training
        diverge at epoch 25 (p had drifted from 3 to 6.7)."""
        p = self.p.float()
        logs = x.float().clamp(min=self.eps).log().flatten(-2)
        log_mean = torch.logsumexp(p * logs, dim=-1) - math.log(logs.shape[-1])
        return torch.exp(log_mean / p).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.3f}"
