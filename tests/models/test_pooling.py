"""GeM pooling: the generalised mean, and finite gradients however large p grows."""

from __future__ import annotations

import pytest
import torch

from wildid.models.pooling import GeM


def _direct(x: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def test_gem_is_the_generalised_mean_between_average_and_max() -> None:
    x = torch.rand(3, 5, 7, 6, generator=torch.Generator().manual_seed(0)) * 6
    for p in (1.0, 3.0, 6.0):
        assert torch.allclose(GeM(p)(x), _direct(x, p), rtol=1e-5)
    assert torch.allclose(GeM(1.0)(x), x.mean(dim=(-2, -1)), rtol=1e-5)
    assert torch.allclose(GeM(200.0)(x), x.amax(dim=(-2, -1)), rtol=0.03)


@pytest.mark.parametrize("p", [3.0, 8.0, 20.0])
def test_weak_channels_keep_every_gradient_finite(p: float) -> None:
    """A channel dead or weak everywhere (after ReLU) underflows the direct form once p
    nears 8 in float32: p's gradient becomes NaN there, and training diverges."""
    x = torch.rand(2, 4, 8, 8)
    x[0, 1] = 0.0
    x[1, 2] = 1e-5
    x.requires_grad_(True)
    gem = GeM(p)
    gem(x).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(gem.p.grad).all()
    if p >= 8:  # the direct form fails here: what the log domain mends
        direct_p = torch.full((1,), p, requires_grad=True)
        _direct(x.detach(), direct_p).sum().backward()
        assert not torch.isfinite(direct_p.grad).all()


def test_half_precision_input_keeps_its_dtype() -> None:
    x = torch.rand(2, 3, 4, 4).half()
    out = GeM(3.0)(x)
    assert out.dtype == torch.float16 and torch.allclose(
        out.float(), _direct(x.float(), 3.0), rtol=1e-3
    )
