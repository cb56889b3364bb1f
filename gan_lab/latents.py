"""The noise and labels of every output: sample grids, interpolations, diversity checks, metrics, the sample CLI.

Each caller brings its own seeded CPU `torch.Generator` and moves the result to its device, so an output
is the same on any device and does not touch the global RNG. (The training step's own noise is
GANModule.sample_noise / sample_labels.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_lab.errors import ConfigError

MODES = ("slerp", "lerp")  # interpolation modes


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`: the same draws on every call."""
    return torch.Generator().manual_seed(seed)


def check_truncation(t: float | None) -> None:
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
        raise ConfigError(
            f"truncation must be null (plain N(0, I)) or a number > 0, got {t!r}; e.g. truncation=1.0"
        )


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"interpolation.mode must be one of {', '.join(MODES)}, got '{mode}'")


def latents(n: int, z_dim: int, generator: torch.Generator, truncation: float | None = None) -> Tensor:
    """z (n, z_dim) on the CPU: N(0, I), or with truncation=t each coordinate from N(0, 1) truncated to [-t, t]."""
    check_truncation(truncation)
    if truncation is None:
        return torch.randn(n, z_dim, generator=generator)
    z = torch.empty(n, z_dim)
    return nn.init.trunc_normal_(z, a=-truncation, b=truncation, generator=generator)


def uniform_labels(n: int, num_classes: int, generator: torch.Generator) -> Tensor | None:
    """n class labels drawn uniformly from [0, num_classes) (None for an unconditional model, drawing nothing)."""
    return torch.randint(0, num_classes, (n,), generator=generator) if num_classes else None


def cycled_labels(n: int, num_classes: int) -> Tensor | None:
    """Balanced labels 0, 1, ..., k-1, 0, ... (n,) (None for an unconditional model)."""
    return torch.arange(n) % num_classes if num_classes else None


def grid_columns(n: int) -> int:
    """Images per row of a roughly square grid of n images."""
    return max(1, round(math.sqrt(n)))


def class_grid_latents(
    per_class: int, num_classes: int, z_dim: int, generator: torch.Generator, truncation: float | None = None
) -> tuple[Tensor, Tensor]:
    """(z, labels) of one row per class, `per_class` columns: column j has the same z in every row, so only
    the class changes down a column."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return latents(per_class, z_dim, generator, truncation).repeat(num_classes, 1), labels


def interpolate(z0: Tensor, z1: Tensor, steps: int, mode: str = "slerp") -> Tensor:
    """`steps` latents (steps, z_dim) from z0 to z1 (each (z_dim,)), endpoints included."""
    check_mode(mode)
    if steps < 2:
        raise ConfigError(f"interpolation.steps must be >= 2 (both endpoints are shown), got {steps}")
    t = torch.linspace(0, 1, steps, dtype=z0.dtype)[:, None]
    omega = torch.acos(F.cosine_similarity(z0, z1, dim=0).clamp(-1, 1))
    # slerp follows the great circle: Gaussian z in high dimension lie near a sphere, and lerp's midpoints
    # fall inside it (atypically small norms). An (anti)parallel pair has no unique great circle: lerp.
    if mode == "lerp" or torch.sin(omega) < 1e-6:
        return (1 - t) * z0 + t * z1
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def interpolation_latents(
    rows: int,
    steps: int,
    z_dim: int,
    num_classes: int,
    generator: torch.Generator,
    mode: str = "slerp",
    truncation: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(z (rows * steps, z_dim), labels) of `rows` walks between random z pairs, `steps` images each.

    Conditional models keep one class per row (classes 0, 1, ... in turn).
    """
    ends = latents(2 * rows, z_dim, generator, truncation)
    z = torch.cat([interpolate(ends[2 * r], ends[2 * r + 1], steps, mode) for r in range(rows)])
    labels = cycled_labels(rows, num_classes)
    return z, None if labels is None else labels.repeat_interleave(steps)
