"""Regularizers against known answers, and acting inside a real D step: each test fails if its penalty or
constraint is dropped, computed on the wrong images, or left to bf16 autocast.

The critic D(x) = ½‖x‖² has the input gradient x, so a penalty's value is known in closed form at any point.
"""

import pytest
import torch
from torch import nn

from gan_lab.core.regularizers import GradientPenalty, R1Penalty
from gan_lab.train import train


class HalfSquaredNorm(nn.Module):
    """D(x) = ½‖x‖² per image: its gradient at x is x itself."""

    def forward(self, x, labels=None):
        return 0.5 * x.flatten(1).pow(2).sum(dim=1)


class ConvCritic(nn.Module):
    """A conv critic that records the dtype of its convolution's output at every call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.seen: list[torch.dtype] = []

    def forward(self, x, labels=None):
        h = self.conv(x)
        self.seen.append(h.dtype)
        return h.float().pow(2).flatten(1).mean(dim=1)


def images(seed: int) -> torch.Tensor:
    return torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def test_gradient_penalty_is_taken_at_random_interpolates():
    real, fake = images(0), images(1)
    torch.manual_seed(123)
    eps = torch.rand(6, 1, 1, 1)  # what the penalty draws, with the same seed
    expected = 10 * (norms(eps * real + (1 - eps) * fake) - 1).pow(2).mean()
    torch.manual_seed(123)
    got = GradientPenalty(weight=10.0).penalty(HalfSquaredNorm(), real, fake, None)
    torch.testing.assert_close(got, expected)
    on_reals, on_fakes = 10 * (norms(real) - 1).pow(2).mean(), 10 * (norms(fake) - 1).pow(2).mean()
    assert abs(got - on_reals) > 1 and abs(got - on_fakes) > 1  # neither reals (R1-like) nor fakes


def test_r1_penalises_the_real_images_only():
    real = images(0)
    expected = 0.5 * 4.0 * norms(real).pow(2).mean()
    for fake in (images(1), images(2) * 5):
        torch.testing.assert_close(
            R1Penalty(gamma=4.0).penalty(HalfSquaredNorm(), real, fake, None), expected
        )
    on_fakes = 0.5 * 4.0 * norms(images(1)).pow(2).mean()
    assert abs(expected - on_fakes) > 1


@pytest.mark.parametrize("regularizer", [GradientPenalty(), R1Penalty()], ids=["gp", "r1"])
def test_penalties_run_in_fp32_inside_bf16_autocast(regularizer):
    critic, real, fake = ConvCritic(), images(0), images(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        critic(real)  # the D forward of the loss: autocast lowers the convolution
        penalty = regularizer.penalty(critic, real, fake, None)
    assert critic.seen == [torch.bfloat16, torch.float32] and penalty.dtype == torch.float32


# --- inside a real D step ---------------------------------------------------------------------------------------
WGAN = ["loss=wasserstein", "normalization=none", "optim=rmsprop", "steps=1"]


def d_weights(*overrides: str, tiny_config) -> list[torch.Tensor]:
    """D's parameters after one training step (one D step, then a G step that leaves D alone)."""
    module = train(tiny_config(*WGAN, *overrides))
    return [p.detach().clone() for p in module.discriminator.parameters()]


def test_weight_clipping_bounds_d_after_a_real_step(tiny_config):
    unclipped = d_weights("regularizer=none", tiny_config=tiny_config)
    assert max(p.abs().max().item() for p in unclipped) > 0.01  # DCGAN's init and one step exceed c
    clipped = d_weights("regularizer=weight_clip", tiny_config=tiny_config)
    assert max(p.abs().max().item() for p in clipped) <= 0.01
    assert any((p.abs() == 0.01).any() for p in clipped)  # clamped to c, not rescaled


@pytest.mark.parametrize("regularizer, weight", [("gradient_penalty", "weight"), ("r1", "gamma")])
def test_a_penalty_changes_the_d_update_and_weight_zero_does_not(tiny_config, regularizer, weight):
    plain = d_weights("regularizer=none", tiny_config=tiny_config)
    zero = d_weights(
        f"regularizer={regularizer}", f"regularizer.{regularizer}.{weight}=0", tiny_config=tiny_config
    )
    ten = d_weights(
        f"regularizer={regularizer}", f"regularizer.{regularizer}.{weight}=10", tiny_config=tiny_config
    )
    assert all(torch.equal(a, b) for a, b in zip(plain, zero, strict=True))
    assert any(not torch.allclose(a, b) for a, b in zip(plain, ten, strict=True))
