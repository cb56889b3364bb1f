"""The generator EMA: an exponential moving average of G's parameters, with G's buffers copied.

Samples and metrics use it when `ema.decay` is set (GANModule.sampling_generator). Until generator step
`ema.start_step` the average is a copy of G; from then on ema <- beta * ema + (1 - beta) * G after each G step,
with beta = decay, or with `ema.rampup` (StyleGAN2-ADA's ema_rampup) beta = min(decay, 0.5 ** (1 / (rampup * t)))
at generator step t: the average's half-life is at most `rampup` times the images seen so far, so a young run's
average is not the initial G (decay 0.9999 from step 0 would keep 92 % of it after 800 steps).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gan_lab.errors import ConfigError


def build_ema(generator: nn.Module, decay: float | None, rampup: float | None = None) -> AveragedModel | None:
    """An exponential moving average of G's parameters (buffers are copied, see update_ema), or None."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"ema.decay must be in (0, 1) (e.g. 0.999) or null for no EMA, got {decay}")
    if rampup is not None and not rampup > 0:
        raise ConfigError(f"ema.rampup must be > 0 (e.g. 0.05) or null for a constant decay, got {rampup}")
    ema = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    ema.decay, ema.rampup = decay, rampup  # what update_ema's decay follows
    return ema.requires_grad_(False)


def ramped_decay(decay: float, rampup: float | None, g_steps: int) -> float:
    """The EMA's decay after generator step g_steps: `decay`, capped by the ramp-up (see the module docstring).

    The half-life in images, min(decay's, rampup * g_steps * batch), is in steps min(decay's, rampup * g_steps):
    the batch size cancels."""
    if rampup is None:
        return decay
    return min(decay, 0.5 ** (1.0 / (rampup * max(g_steps, 1))))


@torch.no_grad()
def update_ema(ema: AveragedModel, generator: nn.Module, g_steps: int, start_step: int) -> None:
    """Average G's parameters into `ema` after generator step `g_steps`; a copy of G until `start_step`.

    The arithmetic of AveragedModel.update_parameters (the same foreach lerp), without its two host syncs
    (`n_averaged == 0`, `n_averaged > 0`): whether this step copies follows from the step counters instead.
    """
    averaged = list(ema.module.parameters())
    current = [p.detach() for p in generator.parameters()]
    if g_steps <= max(start_step, 1):  # until averaging starts (and at a fresh run's first step): a copy of G
        for a, c in zip(averaged, current, strict=True):
            a.copy_(c)
        ema.n_averaged.fill_(1)
    else:
        rampup = getattr(ema, "rampup", None)
        ramped = (
            get_ema_multi_avg_fn(ramped_decay(ema.decay, rampup, g_steps)) if rampup else ema.multi_avg_fn
        )
        ramped(averaged, current, ema.n_averaged)
        ema.n_averaged.add_(1)
    # Buffers are copied, never averaged: BN statistics belong to the current weights, and averaged
    # spectral-norm power-iteration vectors would no longer be singular vectors.
    for ema_buffer, buffer in zip(ema.module.buffers(), generator.buffers(), strict=True):
        ema_buffer.copy_(buffer)
