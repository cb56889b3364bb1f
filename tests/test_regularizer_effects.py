"""Regularizers against known answers, and acting inside a real D step: each test fails if its penalty or
constraint is dropped, computed on the wrong images, or left to bf16 autocast.

The critic D(x) = ½‖x‖² has the input gradient x, so a penalty's value is known in closed form at any point.
"""

import csv

import pytest
import torch
from torch import nn

from gan_lab.core.regularizers import (
    Combined,
    GradientPenalty,
    R1Penalty,
    R2Penalty,
    build_regularizer,
    has_penalty,
)
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


def test_r2_is_on_the_fakes_d_scored():
    real, fake = torch.full((4, 3, 2, 2), 3.0), torch.full((4, 3, 2, 2), 0.5)
    # grad D(fake) = fake: ||grad||^2 = 12 * 0.25 = 3 per sample, so gamma / 2 * 3 = 1.5 * gamma
    assert R2Penalty(gamma=4.0).penalty(HalfSquaredNorm(), real, fake, None).item() == pytest.approx(6.0)
    # R1 on the same batches reads the reals instead: 12 * 9 = 108 -> 216; a mix-up of the two would show
    assert R1Penalty(gamma=4.0).penalty(HalfSquaredNorm(), real, fake, None).item() == pytest.approx(216.0)


def test_r1_plus_r2_is_r3gans_gamma_over_2_times_the_sum():
    real, fake = torch.full((4, 3, 2, 2), 3.0), torch.full((4, 3, 2, 2), 0.5)
    both = build_regularizer([R1Penalty(gamma=0.1), R2Penalty(gamma=0.1)])
    assert isinstance(both, Combined) and has_penalty(both)
    # gamma / 2 * (R1 + R2) = 0.05 * (108 + 3)
    assert both.penalty(HalfSquaredNorm(), real, fake, None).item() == pytest.approx(0.05 * 111, rel=1e-6)
    zero = build_regularizer([R1Penalty(gamma=0.0), R2Penalty(gamma=0.0)])
    assert zero.penalty(HalfSquaredNorm(), real, fake, None).item() == 0.0


@pytest.mark.parametrize("interval", [1, 4])
def test_lazy_regularization_every_kth_d_step_weighted_by_k(
    tiny_config, tmp_path, monkeypatch, caplog, interval
):
    """k = 4: R1 on D steps 1, 5, 9 of 10, the logged penalty k times the computed one, D's Adam lr * 0.8 and
    betas ** 0.8 (c = k / (k + 1)); k = 1: R1 on every D step, weight 1, the optimizer as configured."""
    raw: list[float] = []
    plain_penalty = R1Penalty.penalty

    def recorded(self, *args):
        value = plain_penalty(self, *args)
        raw.append(value.item())
        return value

    monkeypatch.setattr(R1Penalty, "penalty", recorded)
    caplog.set_level("INFO", logger="gan_lab.module")
    module = train(tiny_config("regularizer=r1", f"regularizer.interval={interval}", "steps=10"))
    with open(tmp_path / "run" / "metrics.csv") as f:
        logged = [float(row["train/d_penalty"]) for row in csv.DictReader(f)]  # one D step per row
    penalized = [i for i in range(10) if i % interval == 0]
    assert len(raw) == len(penalized)
    assert [i for i, value in enumerate(logged) if value != 0.0] == penalized
    assert [logged[i] for i in penalized] == pytest.approx([interval * value for value in raw], rel=1e-6)
    c = interval / (interval + 1) if interval > 1 else 1.0
    group = module.trainer.optimizers[1].param_groups[0]  # D's
    assert group["lr"] == pytest.approx(2e-4 * c) and group["betas"] == pytest.approx((0.5**c, 0.999**c))
    assert module.trainer.optimizers[0].param_groups[0]["lr"] == 2e-4  # G's is not regularized
    said = [r.getMessage() for r in caplog.records if "lazy regularization" in r.getMessage()]
    assert said == ([] if interval == 1 else [
        "lazy regularization: the penalty every 4 D steps, weighted by 4; D's lr 0.0002 -> 0.00016, "
        "betas (0.5, 0.999) -> (0.574349, 0.9992)"
    ])  # fmt: skip
