"""Image augmentations for GAN training: ops that change what the discriminator sees.

Every op is a callable `op(x) -> x` on images (N, C, H, W) in [-1, 1] whose class attribute `target` says where
it applies:
  - "real": CutMix, Sharpen. Data augmentation: they change the distribution G has to match, so they apply to
    real batches only, before D sees them.
  - "all": DiffAugment (Zhao et al. 2020). Applied to every input of D, real and fake, in both the D step and the
    G step, and differentiable so G's gradient flows through it: D never sees an unaugmented image, so the
    augmentation does not leak into the generated distribution.
GANModule holds an `Augmentations` and calls `augment.real(x)` on every real batch and `augment.fake(x)` on every
generated batch, in both the D and the G step; `real` runs the real-only ops, then the "all" ops.
Randomness comes from torch's global RNG (seeding reproduces it) and is drawn on x's device: no host sync.

Horizontal flips are not an op here: `augment=hflip` sets `dataset.hflip=true`, whose flips the data's
StreamSampler draws per pass (gan_lab.data.sampler), so a resumed run sees exactly the same ones. A stored
config that asks for the old flip op gets that replacement named (gan_lab.legacy.HFlip).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from gan_lab.errors import ConfigError


class Augment(Protocol):
    target: ClassVar[str]  # "real" (real batches only) or "all" (every input of D)

    def __call__(self, x: Tensor) -> Tensor: ...


def _probability(op: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ConfigError(f"augment.{op}.p must be in [0, 1], got {p}")
    return float(p)


def _positive(op: str, key: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"augment.{op}.{key} must be > 0, got {value}")
    return float(value)


def _chosen(x: Tensor, p: float) -> Tensor:
    """(N, 1, 1, 1) bool: the images an op with probability p applies to."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p  # rand is in [0, 1): p=1 always, p=0 never


def _box_mask(x: Tensor, top: Tensor, left: Tensor, box_h: Tensor | int, box_w: Tensor | int) -> Tensor:
    """(N, 1, H, W) bool: inside each image's box of rows [top, top + box_h), columns [left, left + box_w)."""
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    # A box reaching past the border is clipped for free: rows and cols only cover the image.
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


class _Op:
    target: ClassVar[str]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class CutMix(_Op):
    """With probability p per image (N, C, H, W), paste a box of another image of the batch (Yun et al. 2019).

    The box's area fraction is Beta(alpha, alpha), its centre uniform over the image (clipped at the border), and
    it is taken from the same place in the other image. Both images are real, so there are no labels to mix.
    """

    target = "real"

    def __init__(self, p: float = 0.5, alpha: float = 1.0) -> None:
        self.p = _probability("cutmix", p)
        self.alpha = _positive("cutmix", "alpha", alpha)

    def __call__(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        if n < 2:
            return x
        # A random non-zero cyclic shift: every image gets a partner other than itself, so p is the real rate.
        partner = (torch.arange(n, device=x.device) + torch.randint(1, n, (1,), device=x.device)) % n
        alpha = torch.full((n,), self.alpha, device=x.device)
        area = torch.distributions.Beta(alpha, alpha, validate_args=False).sample()  # validation would sync
        box_h, box_w = (area.sqrt() * h).long(), (area.sqrt() * w).long()
        top = torch.randint(0, h, (n,), device=x.device) - box_h // 2
        left = torch.randint(0, w, (n,), device=x.device) - box_w // 2
        paste = _box_mask(x, top, left, box_h, box_w) & _chosen(x, self.p)
        return torch.where(paste, x[partner], x)


class Sharpen(_Op):
    """With probability p per image (N, C, H, W), torchvision's adjust_sharpness by `factor` (1 = unchanged)."""

    target = "real"

    def __init__(self, p: float = 0.5, factor: float = 2.0) -> None:
        self.p = _probability("sharpen", p)
        self.factor = _positive("sharpen", "factor", factor)

    def __call__(self, x: Tensor) -> Tensor:
        # In [0, 1], clamped there as adjust_sharpness does, so the result stays in [-1, 1].
        sharp = _adjust_sharpness((x + 1) / 2, self.factor) * 2 - 1
        return torch.where(_chosen(x, self.p), sharp, x)


def _adjust_sharpness(x: Tensor, factor: float) -> Tensor:
    """torchvision's adjust_sharpness for float images (N, C, H, W) in [0, 1], without its host sync.

    torchvision builds its smoothing kernel with torch.tensor(..., device=x.device): a copy from host memory that
    waits for the GPU at every call. Here the kernel is filled on the device. Tested equal to torchvision's.
    """
    channels, height, width = x.shape[1:]
    if height <= 2 or width <= 2:
        return x  # no inner pixels to smooth (torchvision returns such images unchanged too)
    kernel = torch.full((3, 3), 1.0 / 13.0, dtype=x.dtype, device=x.device)
    # The 3x3 smoothing filter of PIL's ImageFilter.SMOOTH. fill_ takes the number as a kernel argument;
    # `kernel[1, 1] = 5 / 13` would copy it from host memory, a host sync at every call on a GPU.
    kernel[1, 1].fill_(5.0 / 13.0)
    smooth = torch.nn.functional.conv2d(x, kernel.expand(channels, 1, 3, 3), groups=channels)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth  # borders keep their pixels
    return (x * factor + degenerate * (1.0 - factor)).clamp_(0.0, 1.0)


# --- DiffAugment (Zhao et al. 2020): differentiable, per-image random ops with the original's ranges -------------
def _per_image(x: Tensor) -> Tensor:
    """(N, 1, 1, 1) uniform [0, 1) draws, one per image."""
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def brightness(x: Tensor) -> Tensor:
    """Add one U(-0.5, 0.5) constant per image (N, C, H, W)."""
    return x + (_per_image(x) - 0.5)


def saturation(x: Tensor) -> Tensor:
    """Scale each pixel's deviation from its channel mean by U(0, 2) per image (N, C, H, W)."""
    gray = x.mean(dim=1, keepdim=True)
    return (x - gray) * (_per_image(x) * 2) + gray


def contrast(x: Tensor) -> Tensor:
    """Scale the deviation from the image mean by U(0.5, 1.5) per image (N, C, H, W)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_per_image(x) + 0.5) + mean


def _shift(x: Tensor, dim: int, max_shift: int) -> Tensor:
    """Shift each image along dim (2 rows, 3 columns) by its own integer in [-max_shift, max_shift], zero-filled."""
    n, size = x.shape[0], x.shape[dim]
    offset = torch.randint(-max_shift, max_shift + 1, (n, 1), device=x.device)
    source = torch.arange(size, device=x.device) + offset  # (N, size): output i reads input i + offset
    shape = [n, 1, 1, 1]
    shape[dim] = size
    inside = ((source >= 0) & (source < size)).view(shape)
    index = source.clamp(0, size - 1).view(shape).expand_as(x)
    return torch.where(inside, x.gather(dim, index), 0.0)  # gather is differentiable w.r.t. x


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each image (N, C, H, W) by up to ratio * size rows and columns, padding with zeros."""
    x = _shift(x, 2, int(x.shape[2] * ratio + 0.5))
    return _shift(x, 3, int(x.shape[3] * ratio + 0.5))


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero a (ratio * H) x (ratio * W) square per image (N, C, H, W); centred anywhere, so clipped at borders."""
    n, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # The original's centre range: rows 0..H for an even square, 0..H-1 for an odd one (same for columns).
    top = torch.randint(0, h + 1 - size_h % 2, (n,), device=x.device) - size_h // 2
    left = torch.randint(0, w + 1 - size_w % 2, (n,), device=x.device) - size_w // 2
    return torch.where(_box_mask(x, top, left, size_h, size_w), 0.0, x)


DIFF_AUGMENT_OPS: dict[str, tuple[Callable[[Tensor], Tensor], ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


class DiffAugment(_Op):
    """The policy's ops (names of DIFF_AUGMENT_OPS, in order) on images (N, C, H, W); "" or [] = identity."""

    target = "all"

    def __init__(self, policy: str | Sequence[str] = "color,translation,cutout") -> None:
        # A list too: Hydra reads an unquoted `policy=a,b` override as a sweep, `policy=[a,b]` as a list.
        parts = (policy or "").split(",") if isinstance(policy, str) or policy is None else list(policy)
        names = [name.strip() for name in parts if name.strip()]
        self.policy = ",".join(names)
        unknown = [name for name in names if name not in DIFF_AUGMENT_OPS]
        if unknown:
            raise ConfigError(
                f"augment.diffaugment.policy: unknown op {', '.join(map(repr, unknown))}; "
                f"valid ops: {', '.join(DIFF_AUGMENT_OPS)} (e.g. augment.diffaugment.policy=[color,translation])"
            )
        self._fns = [fn for name in names for fn in DIFF_AUGMENT_OPS[name]]

    def __call__(self, x: Tensor) -> Tensor:
        for fn in self._fns:
            x = fn(x)
        return x


class Augmentations:
    """The ops of a run, split by target; `real(x)` and `fake(x)` map images (N, C, H, W) to the same shape."""

    def __init__(self, ops: Sequence[Augment] | Mapping[str, Augment | None] | None = None) -> None:
        # Hydra gives the `augment` group as {name: op}; a null entry drops that op.
        items = list(ops.values()) if isinstance(ops, Mapping) else list(ops or [])
        items = [op for op in items if op is not None]
        for op in items:
            if getattr(op, "target", None) not in ("real", "all") or not callable(op):
                raise ConfigError(
                    f"augment: {op!r} is not an augmentation op (a callable with target 'real'/'all')"
                )
        self.real_ops = [op for op in items if op.target == "real"]
        self.all_ops = [op for op in items if op.target == "all"]

    def real(self, x: Tensor) -> Tensor:
        """A real batch as D sees it: real-only ops (data augmentation), then the ops for every input of D."""
        for op in (*self.real_ops, *self.all_ops):
            x = op(x)
        return x

    def fake(self, x: Tensor) -> Tensor:
        """A generated batch as D sees it (D and G steps): the ops for every input of D only."""
        for op in self.all_ops:
            x = op(x)
        return x

    @property
    def adaptive(self) -> Any:
        """The op whose probability adapts to D (augment=ada: it has `observe` and `adjust`), or None."""
        adaptive = [op for op in self.all_ops if hasattr(op, "observe") and hasattr(op, "adjust")]
        if len(adaptive) > 1:
            raise ConfigError("augment: more than one adaptive augmentation; keep one (augment=ada)")
        return adaptive[0] if adaptive else None

    def __bool__(self) -> bool:
        return bool(self.real_ops or self.all_ops)

    def __repr__(self) -> str:
        return f"Augmentations(real={self.real_ops!r}, all={self.all_ops!r})"
