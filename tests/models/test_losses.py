"""Metric losses behind one interface: margins, sub-centres, and that each one learns."""

from __future__ import annotations

import math

import pytest
import torch

from wildid.config import LossConfig
from wildid.models.heads import ArcFaceHead, dynamic_margins
from wildid.models.losses import LOSSES, build_loss


def test_dynamic_margins_follow_the_formula() -> None:
    margins = dynamic_margins(torch.tensor([1, 16, 81]), a=0.5, lam=0.25, b=0.05)
    assert torch.allclose(margins, torch.tensor([0.55, 0.3, 0.05 + 0.5 / 3]))


def test_arcface_adds_the_class_margin_to_the_target_angle() -> None:
    head = ArcFaceHead(4, 3, scale=1.0, margin=torch.tensor([0.1, 0.2, 0.4]))
    emb = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    cos = head.cosine(emb)
    logits = head(emb, labels)
    theta = torch.acos(cos.clamp(-1, 1))
    for row, label in enumerate(labels):
        m = head.margins[label]
        expected = torch.cos(theta[row, label] + m) if theta[row, label] + m < math.pi else None
        if expected is not None:
            assert torch.isclose(logits[row, label], expected, atol=1e-5)
        others = [c for c in range(3) if c != label]
        assert torch.allclose(logits[row, others], cos[row, others])


def test_subcenter_cosine_is_the_closest_centre() -> None:
    head = ArcFaceHead(4, 2, scale=1.0, subcenters=3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(4).repeat(2, 1)[:6])  # class 0: e0,e1,e2; class 1: e3,e0,e1
    cos = head.cosine(torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]))
    assert torch.allclose(cos, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_build_loss_config() -> None:
    loss = build_loss(LossConfig(dynamic_margin=True, subcenters=2), 3, [1, 4, 9], 8)
    assert loss.head.weight.shape == (6, 8)
    assert torch.allclose(
        loss.head.margins, dynamic_margins(torch.tensor([1, 4, 9]), 0.5, 0.25, 0.05)
    )
    with pytest.raises(ValueError, match="class counts"):
        build_loss(LossConfig(), 3, [1, 2], 8)


def _nearest_neighbour_accuracy(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    emb = torch.nn.functional.normalize(embeddings.detach(), dim=1)
    sim = emb @ emb.T - 2 * torch.eye(len(emb))
    return (labels[sim.argmax(1)] == labels).float().mean().item()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_learns_to_separate_classes(name: str) -> None:
    """A few steps on fixed noisy features: nearest-neighbour retrieval gets much better."""
    torch.manual_seed(0)
    labels = torch.arange(8).repeat_interleave(8)
    features = torch.randn(64, 16) + torch.randn(8, 16)[labels]
    embed = torch.nn.Linear(16, 8)
    before = _nearest_neighbour_accuracy(embed(features), labels)
    loss_fn = build_loss(LossConfig(name=name), 8, [8] * 8, 8)
    optimizer = torch.optim.Adam([*embed.parameters(), *loss_fn.parameters()], lr=0.05)
    for _ in range(40):
        loss = loss_fn(embed(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _nearest_neighbour_accuracy(embed(features), labels)
    assert after > before + 0.2 and after > 0.85
    scores = loss_fn.class_scores(embed(features))
    if name == "triplet":
        assert scores is None
    else:
        assert scores.shape == (64, 8)
        assert (scores.argmax(1) == labels).float().mean() > 0.85
