"""The generator EMA: an exponential moving average of G's parameters, with G's buffers copied.

Samples and metrics use it when `ema.decay` is set (GANModule.sampling_generator). Until generator step
`ema.start_step` the average is a copy of G; from then on ema <- decay * ema + (1 - decay) * G after each G step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gan_lab.errors import ConfigError


def build_ema(generator: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of G's parameters (buffers are copied, see update_ema), or None."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"ema.decay must be in (0, 1) (e.g. 0.999) or null for no EMA, got {decay}")
    ema = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    return ema.requires_grad_(False)


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
        ema.multi_avg_fn(averaged, current, ema.n_averaged)
        ema.n_averaged.add_(1)
    # Buffers are copied, never averaged: BN statistics belong to the current weights, and averaged
    # spectral-norm power-iteration vectors would no longer be singular vectors.
    for ema_buffer, buffer in zip(ema.module.buffers(), generator.buffers(), strict=True):
        ema_buffer.copy_(buffer)
