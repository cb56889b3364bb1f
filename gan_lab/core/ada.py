"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training GANs with Limited Data").

An augmentation op with target "all" (see gan_lab.core.augment): every input of D, real and fake, in the D and the G
step, goes through the same differentiable pipeline, so the augmentations do not leak into what G generates.
Each op of the pipeline applies to each image independently with probability p, and p adapts during training to
D's overfitting, measured by the overfitting heuristic r_t = E[sign(D(x_real))]:
  - every D step the training module calls `observe(sign(D(x_real) - threshold))`;
  - every `interval` D steps it calls `adjust(batch_size)`: p moves by (batch_size * interval) / ramp_images up
    when r_t > target, down when r_t < target (so p can go from 0 to 1 in ramp_images real images), clamped to
    [0, 1], and the sign accumulators restart.
p and the accumulators are buffers on the module's device, updated in place and read only there: the op never
waits for the GPU, can be recorded in a CUDA graph (static shapes, buffers keep their storage), and p and the
accumulators are saved and resumed with the state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_lab.core.augment import (
    _positive,
    _probability,
    brightness,
    contrast,
    cutout,
    saturation,
    translation,
)
from gan_lab.errors import ConfigError

SCALE_STD = 0.2 * math.log(2)  # the paper's isotropic scaling: lognormal(0, (0.2 ln 2)^2)


def _flip(x: Tensor) -> Tensor:
    """Mirror each image (N, C, H, W) left to right."""
    return x.flip(3)


def _rotate90(x: Tensor) -> Tensor:
    """Rotate each square image (N, C, H, W) by k * 90 degrees, k uniform in {1, 2, 3} per image."""
    if x.shape[2] != x.shape[3]:
        raise ConfigError(
            f"augment.ada.ops: rotate90 needs square images, got {x.shape[2]}x{x.shape[3]}; "
            "drop it, e.g. augment.ada.ops=[flip,translation,scale,color,cutout]"
        )
    k = torch.randint(1, 4, (x.shape[0], 1, 1, 1), device=x.device)
    r1 = x.rot90(1, (2, 3))
    return torch.where(k == 1, r1, torch.where(k == 2, r1.rot90(1, (2, 3)), x.rot90(-1, (2, 3))))


def scale_by(x: Tensor, factors: Tensor) -> Tensor:
    """Zoom each image (N, C, H, W) about its centre by factors (N,): > 1 magnifies; bilinear, reflected borders."""
    inverse = (1.0 / factors).to(x.dtype)  # output coordinate u reads the input at u / factor
    zero = torch.zeros_like(inverse)
    theta = torch.stack([inverse, zero, zero, zero, inverse, zero], 1).view(-1, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _scale(x: Tensor) -> Tensor:
    """Zoom each image by its own lognormal(0, (0.2 ln 2)^2) factor."""
    return scale_by(x, torch.exp(torch.randn(x.shape[0], device=x.device, dtype=x.dtype) * SCALE_STD))


# Each name's functions, each drawn with probability p on its own ("color" is three draws), in pipeline order.
ADA_OPS: dict[str, tuple[Callable[[Tensor], Tensor], ...]] = {
    "flip": (_flip,),
    "rotate90": (_rotate90,),
    "translation": (translation,),
    "scale": (_scale,),
    "color": (brightness, saturation, contrast),
    "cutout": (cutout,),
}


def _world_size() -> int:
    """Processes of the distributed run (1 without one)."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if distributed else 1


class AdaptiveAugment(nn.Module):
    """ADA's pipeline on images (N, C, H, W) in [-1, 1]; each op per image with probability p (a device buffer).

    Args:
        p: the initial probability (kept throughout when adjust=False).
        target: ADA's target for r_t = E[sign(D(x_real))]; p rises while r_t is above it.
        interval: the D steps between calls of `adjust` (the training module makes the calls).
        ramp_images: the real images over which p can move by 1.
        adjust: False keeps p fixed (a fixed-probability augmentation).
        ops: names of ADA_OPS, applied in the order given.
    """

    target: ClassVar[str] = "all"  # the augment op protocol; ADA's r_t target is `rt_target`

    p: Tensor
    sign_sum: Tensor
    sign_count: Tensor

    def __init__(
        self,
        p: float = 0.0,
        target: float = 0.6,
        interval: int = 4,
        ramp_images: int = 500_000,
        adjust: bool = True,
        ops: str | Sequence[str] = ("flip", "rotate90", "translation", "scale", "color", "cutout"),
    ) -> None:
        super().__init__()
        self.initial_p = _probability("ada", p)
        if not 0.0 < target < 1.0:  # also rejects NaN
            raise ConfigError(f"augment.ada.target must be in (0, 1) (ADA uses 0.6), got {target}")
        self.rt_target = float(target)
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"augment.ada.interval must be an integer >= 1 (D steps), got {interval!r}")
        self.interval = interval
        self.ramp_images = _positive("ada", "ramp_images", ramp_images)
        self.adaptive = bool(adjust)
        parts = ops.split(",") if isinstance(ops, str) else list(ops)
        names = [str(name).strip() for name in parts if str(name).strip()]
        unknown = [name for name in names if name not in ADA_OPS]
        if unknown:
            raise ConfigError(
                f"augment.ada.ops: unknown op {', '.join(map(repr, unknown))}; valid ops: {', '.join(ADA_OPS)}"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(f"augment.ada.ops: {', '.join(map(repr, repeated))} named more than once")
        self.ops = tuple(names)
        self._fns = [fn for name in names for fn in ADA_OPS[name]]
        self.register_buffer("p", torch.tensor(self.initial_p, dtype=torch.float32))
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float32))
        self.register_buffer("sign_count", torch.zeros((), dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        if self.p.device != x.device:  # comparing with a p on another device would read it back: a host sync
            raise RuntimeError(
                f"AdaptiveAugment's p is on {self.p.device}, the images on {x.device}: move the op with .to()"
            )
        for fn in self._fns:
            chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p  # rand in [0, 1): p=0 never
            x = torch.where(chosen, fn(x), x)
        return x

    @torch.no_grad()
    def observe(self, real_signs: Tensor) -> None:
        """Accumulate sign(D(x_real) - threshold) of a D step, for r_t (in place, on the device)."""
        self.sign_sum.add_(real_signs.detach().to(self.sign_sum.dtype).sum())
        self.sign_count.add_(real_signs.numel())

    @torch.no_grad()
    def adjust(self, batch_size: int) -> None:
        """Move p by sign(r_t - target) * batch_size * interval / ramp_images, clamp to [0, 1], restart r_t.

        Under DDP `batch_size` is one rank's: r_t and the step are taken over all ranks' images.

        r_t equal to the target (sign 0), or no observations since the last call, leave p where it is.
        """
        world = _world_size()
        if world > 1:  # DDP: r_t over every rank's reals, so every rank moves p alike (by ADA's global batch)
            torch.distributed.all_reduce(self.sign_sum)
            torch.distributed.all_reduce(self.sign_count)
        if self.adaptive:
            rt = self.sign_sum / self.sign_count.clamp(min=1)
            direction = torch.sign(rt - self.rt_target) * (self.sign_count > 0)
            self.p.add_(direction * (batch_size * world * self.interval / self.ramp_images)).clamp_(0.0, 1.0)
        self.sign_sum.zero_()
        self.sign_count.zero_()

    def extra_repr(self) -> str:
        return (
            f"p={self.initial_p}, target={self.rt_target}, interval={self.interval}, "
            f"ramp_images={self.ramp_images:g}, adjust={self.adaptive}, ops={list(self.ops)}"
        )
