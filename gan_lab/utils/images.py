"""The one conversion from model images to bytes, shared by metrics, sample grids and saved PNGs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_lab.errors import ConfigError


def to_uint8(images: Tensor) -> Tensor:
    """Float images in [-1, 1] (N, C, H, W) -> uint8, exactly the bytes torchvision's save_image writes.

    Same arithmetic as save_image(normalize=True, value_range=(-1, 1)): so metrics computed from tensors equal
    metrics computed by torch-fidelity from the PNG files gan_lab writes.
    """
    unit = (images.detach().float().clamp(-1, 1) + 1) / 2
    return unit.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def to_resolution(images: Tensor, resolution: int) -> Tensor:
    """Float images (N, C, H, W) or (C, H, W) at resolution² by a box filter (a 2x2 mean from 64² to 32²); never upsampled."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    if min(images.shape[-2:]) < resolution:
        raise ConfigError(
            f"images of {images.shape[-1]}x{images.shape[-2]} cannot be scored at {resolution}² without "
            f"upsampling them; lower metrics.resolution"
        )
    batch = images.float() if images.dim() == 4 else images.float()[None]  # one image (C, H, W) too
    return F.interpolate(batch, size=(resolution, resolution), mode="area").view(
        *images.shape[:-2], resolution, resolution
    )


def uint8_at_resolution(images: Tensor, resolution: int) -> Tensor:
    """uint8 images reduced to resolution² (box filter in float, rounded once); unchanged if already there."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    return to_resolution(images.float(), resolution).round_().clamp_(0, 255).to(torch.uint8)


def generated_to_uint8(images: Tensor, resolution: int) -> Tensor:
    """Generated float images in [-1, 1] -> uint8 at the metric resolution, quantized once (after resizing)."""
    return to_uint8(to_resolution(images.detach().float(), resolution))
