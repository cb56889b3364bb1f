"""Discriminator regularizers.

A regularizer has two hooks, so penalties and constraints share one interface:
- `penalty(discriminator, real, fake, labels)`: a scalar added to the D loss (0 for constraints);
- `after_d_step(discriminator)`: applied to D's weights after each optimizer step (weight clipping).
Penalties are computed in at least fp32 with autocast off: squared gradient norms overflow/underflow in fp16.
Several regularizers at once (`regularizer=[r1,r2]`) are one `Combined`: their penalties add up.
Lazy regularization (StyleGAN2) is GANModule's: `regularizer.interval=k` adds k * penalty on every k-th D step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gan_lab.errors import ConfigError


class Regularizer:
    """No regularization; the base class of the others."""

    def penalty(self, discriminator: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
        return real.new_zeros(())

    @torch.no_grad()
    def after_d_step(self, discriminator: nn.Module) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in vars(self).items())})"


class WeightClip(Regularizer):
    """WGAN weight clipping (Arjovsky et al. 2017): every D parameter clamped to [-clip, clip] after each step."""

    def __init__(self, clip: float = 0.01) -> None:
        if clip <= 0:
            raise ConfigError(
                f"regularizer.weight_clip.clip must be > 0, got {clip}; e.g. regularizer.weight_clip.clip=0.01 (WGAN's)"
            )
        self.clip = clip

    @torch.no_grad()
    def after_d_step(self, discriminator: nn.Module) -> None:
        for p in discriminator.parameters():
            p.clamp_(-self.clip, self.clip)


def _at_least_fp32(x: Tensor) -> Tensor:
    """x detached, in fp32, or kept in float64 when D runs in it (trainer.precision=64)."""
    return x.detach().to(torch.promote_types(x.dtype, torch.float32))


def _input_gradients(discriminator: nn.Module, x: Tensor, labels: Tensor | None) -> Tensor:
    """d sum(D(x)) / dx in at least fp32, kept in the graph so the penalty can be back-propagated; shape of x."""
    x = _at_least_fp32(x).requires_grad_(True)
    device_type = x.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        logits = discriminator(x, labels)
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return grad


def _zero_centred(discriminator: nn.Module, x: Tensor, labels: Tensor | None, gamma: float) -> Tensor:
    """gamma / 2 * E[||grad D(x)||^2]: R1 on real images, R2 on fakes."""
    grad = _input_gradients(discriminator, x, labels)
    return 0.5 * gamma * grad.flatten(1).pow(2).sum(dim=1).mean()


class GradientPenalty(Regularizer):
    """WGAN-GP (Gulrajani et al. 2017): weight * E[(||grad D(x_hat)|| - 1)^2] on random interpolates."""

    def __init__(self, weight: float = 10.0) -> None:
        self.weight = weight

    def penalty(self, discriminator: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
        x_hat = eps * _at_least_fp32(real) + (1 - eps) * _at_least_fp32(fake)
        grad = _input_gradients(discriminator, x_hat, labels)
        return self.weight * (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


class R1Penalty(Regularizer):
    """R1 (Mescheder et al. 2018): gamma / 2 * E[||grad D(x_real)||^2] on real data."""

    def __init__(self, gamma: float = 10.0) -> None:
        self.gamma = gamma

    def penalty(self, discriminator: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
        return _zero_centred(discriminator, real, labels, self.gamma)


class R2Penalty(Regularizer):
    """R2 (Mescheder et al. 2018; R3GAN): gamma / 2 * E[||grad D(x_fake)||^2] on the fakes D scored."""

    def __init__(self, gamma: float = 10.0) -> None:
        self.gamma = gamma

    def penalty(self, discriminator: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
        return _zero_centred(discriminator, fake, labels, self.gamma)


class Combined(Regularizer):
    """Several regularizers as one: the sum of their penalties, each one's after_d_step in turn.

    With R1 and R2 of the same gamma this is R3GAN's gamma / 2 * (R1 + R2).
    """

    def __init__(self, parts: Sequence[Regularizer]) -> None:
        self.parts = list(parts)

    def penalty(self, discriminator: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
        terms = [part.penalty(discriminator, real, fake, labels) for part in self.parts if has_penalty(part)]
        return sum(terms[1:], terms[0]) if terms else real.new_zeros(())

    @torch.no_grad()
    def after_d_step(self, discriminator: nn.Module) -> None:
        for part in self.parts:
            part.after_d_step(discriminator)

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.parts)) or "Regularizer()"


def has_penalty(regularizer: Regularizer) -> bool:
    """Whether the regularizer adds a penalty term (which differentiates through D twice)."""
    if isinstance(regularizer, Combined):
        return any(has_penalty(part) for part in regularizer.parts)
    return type(regularizer).penalty is not Regularizer.penalty


def members(regularizer: Regularizer) -> list[Regularizer]:
    """The regularizers a Combined holds, or [regularizer]."""
    return list(regularizer.parts) if isinstance(regularizer, Combined) else [regularizer]


def build_regularizer(parts: Sequence[Regularizer | None]) -> Regularizer:
    """The run's regularizer from the `regularizer` group's entries (None entries dropped): none, one, or Combined."""
    kept = [part for part in parts if part is not None and type(part) is not Regularizer]
    if not kept:
        return Regularizer()
    return kept[0] if len(kept) == 1 else Combined(kept)


def lazy_interval(interval: object) -> int:
    """regularizer.interval checked: an integer >= 1 (1 = a penalty at every D step)."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ConfigError(
            f"regularizer.interval must be an integer >= 1 (penalty every k D steps), got {interval!r}; "
            "e.g. regularizer.interval=16 (StyleGAN2's lazy R1)"
        )
    return interval
