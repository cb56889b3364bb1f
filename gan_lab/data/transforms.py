"""The image pipeline's steps: any PIL mode to RGB, the square resize/crop, and uint8 -> [-1, 1]."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, scaling 16-bit images instead of clipping them."""
    if img.mode.startswith("I;16") or img.mode == "I":
        # PIL's own conversion clips 16-bit values at 255; 65535 / 257 = 255 maps the full range.
        arr = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    elif img.mode in ("P", "PA", "LA"):
        # Going through RGBA keeps palette transparency from triggering a PIL warning.
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


class _ResizeCrop:
    """[Center-crop to ``first_crop``,] resize the shorter side to ``size`` and center-crop; no-op if it fits."""

    def __init__(self, size: int, first_crop: int | None = None) -> None:
        self.size = size
        self.first_crop = transforms.CenterCrop(first_crop) if first_crop else None
        self.resize = transforms.Resize(size)
        self.crop = transforms.CenterCrop(size)

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.first_crop is not None:
            img = self.first_crop(img)
        if img.size == (self.size, self.size):
            return img
        return self.crop(self.resize(img))


def reference_transform(resolution: int, crop: int | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> RGB -> square ``resolution`` crop -> uint8 tensor (3, R, R), for metric reference images."""
    return transforms.Compose([to_rgb, _ResizeCrop(resolution, crop), transforms.PILToTensor()])


def image_transform(resolution: int, crop: int | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> RGB -> [center crop] -> square ``resolution`` -> tensor in [-1, 1] (flips: StreamSampler)."""
    steps = [
        to_rgb,
        _ResizeCrop(resolution, crop),
        transforms.ToTensor(),
        transforms.Normalize([0.5] * 3, [0.5] * 3),
    ]
    return transforms.Compose(steps)


def _unit_range_table() -> torch.Tensor:
    """(256,) float32: what ToTensor + Normalize(0.5, 0.5) of `image_transform` give each uint8 value.

    Computed by those very transforms on the CPU, as the file pipeline runs them. Looking values up is exact on
    any device, whereas recomputing them is not: CUDA divides by a scalar as a * (1 / b), which differs from
    the CPU's a / b in the last bit for 126 of the 256 values.
    """
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 256, 1), 3, axis=2))
    return transforms.Normalize([0.5] * 3, [0.5] * 3)(transforms.ToTensor()(ramp))[0, 0].contiguous()


_UNIT_RANGE = _unit_range_table()
_unit_range_on: dict[torch.device, torch.Tensor] = {}


def _look_up_unit_range(images: torch.Tensor) -> torch.Tensor:
    table = _unit_range_on.get(images.device)
    if table is None:
        table = _unit_range_on.setdefault(images.device, _UNIT_RANGE.to(images.device))
    return table.index_select(0, images.reshape(-1).int()).view(images.shape)


def uint8_to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1], bit-identical to `image_transform`'s ToTensor + Normalize."""
    if images.device.type == "cpu":
        # ToTensor's and Normalize's own CPU ops, in their order (here ~8x faster than the table look-up).
        return images.float().div_(255).sub_(0.5).div_(0.5)
    return _look_up_unit_range(images)
