"""Regularizers against known answers on a linear discriminator D(x) = <w, x>, whose input gradient is w."""

import pytest
import torch
from torch import nn

from gan_lab.build import regularizer_entries
from gan_lab.core.regularizers import (
    GradientPenalty,
    R1Penalty,
    R2Penalty,
    Regularizer,
    WeightClip,
    build_regularizer,
    has_penalty,
    lazy_interval,
)
from gan_lab.errors import ConfigError


class LinearCritic(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x, labels=None):
        return (x.flatten(1) * self.weight.flatten()).sum(dim=1)


def make(norm: float) -> tuple[LinearCritic, torch.Tensor, torch.Tensor]:
    w = torch.zeros(3, 4, 4)
    w[0, 0, 0], w[1, 2, 3] = 0.6 * norm, 0.8 * norm  # ||w|| = norm
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    return LinearCritic(w), real, fake


@pytest.mark.parametrize("norm", [0.5, 1.0, 3.0])
def test_gradient_penalty_known_norm(norm):
    critic, real, fake = make(norm)
    penalty = GradientPenalty(weight=10.0).penalty(critic, real, fake, None)
    assert penalty.item() == pytest.approx(10.0 * (norm - 1.0) ** 2, abs=1e-5)


def test_gradient_penalty_backpropagates_to_d():
    critic, real, fake = make(3.0)
    GradientPenalty().penalty(critic, real, fake, None).backward()
    # d/dw [10 (||w|| - 1)^2] = 20 (||w|| - 1) w / ||w||
    expected = 20 * (3.0 - 1.0) * critic.weight.detach() / 3.0
    torch.testing.assert_close(critic.weight.grad, expected)


def test_gradient_penalty_is_fp32_under_autocast():
    critic, real, fake = make(2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty = GradientPenalty().penalty(critic, real.bfloat16(), fake.bfloat16(), None)
    assert penalty.dtype == torch.float32
    assert penalty.item() == pytest.approx(10.0, rel=1e-5)


def test_r1_known_norm():
    critic, real, fake = make(2.0)
    assert R1Penalty(gamma=4.0).penalty(critic, real, fake, None).item() == pytest.approx(0.5 * 4.0 * 4.0)


def test_weight_clip_bounds_every_parameter():
    d = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(4, 2))
    with torch.no_grad():
        for p in d.parameters():
            p.normal_(0, 1)
    WeightClip(0.01).after_d_step(d)
    for p in d.parameters():
        assert p.abs().max().item() <= 0.01
        assert (p.abs() == 0.01).any()  # clamped, not rescaled


def test_base_regularizer_is_a_no_op():
    critic, real, fake = make(2.0)
    assert Regularizer().penalty(critic, real, fake, None).item() == 0.0
    with pytest.raises(ConfigError, match="regularizer.weight_clip.clip"):
        WeightClip(0.0)


def test_r2_known_norm_on_a_linear_critic_and_fp32_under_autocast():
    critic, real, fake = make(2.0)
    assert R2Penalty(gamma=4.0).penalty(critic, real, fake, None).item() == pytest.approx(0.5 * 4.0 * 4.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty = R2Penalty(gamma=4.0).penalty(critic, real.bfloat16(), fake.bfloat16(), None)
    assert penalty.dtype == torch.float32


def test_several_regularizers_each_act_and_none_is_the_base():
    assert type(build_regularizer([])) is Regularizer and type(build_regularizer([None])) is Regularizer
    assert isinstance(build_regularizer([R1Penalty()]), R1Penalty)  # one is itself, not wrapped
    both = build_regularizer([WeightClip(0.01), R1Penalty()])
    d = nn.Sequential(nn.Linear(4, 2))
    with torch.no_grad():
        d[0].weight.fill_(1.0)
    both.after_d_step(d)
    assert d[0].weight.abs().max().item() == pytest.approx(0.01)  # the clip ran inside Combined
    assert has_penalty(both) and not has_penalty(build_regularizer([WeightClip(0.01)]))


def test_the_group_builds_new_keyed_entries_and_a_single_target():
    from omegaconf import OmegaConf

    keyed = OmegaConf.create(
        {
            "interval": 4,
            "r1": {"_target_": "gan_lab.core.regularizers.R1Penalty", "gamma": 0.5},
            "r2": {"_target_": "gan_lab.core.regularizers.R2Penalty", "gamma": 0.5},
        }
    )
    assert [type(r).__name__ for r in regularizer_entries(keyed)] == ["R1Penalty", "R2Penalty"]
    # a stored config of a run from before the group took several: the regularizer itself at the top
    stored = OmegaConf.create({"_target_": "gan_lab.core.regularizers.R1Penalty", "gamma": 3.0})
    (single,) = regularizer_entries(stored)
    assert isinstance(single, R1Penalty) and single.gamma == 3.0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_lazy_interval_must_be_a_positive_integer(bad):
    with pytest.raises(ConfigError, match="regularizer.interval must be an integer >= 1"):
        lazy_interval(bad)
