"""The one conversion from model images to bytes, shared by metrics, sample grids and saved PNGs."""

from __future__ import annotations

import torch
from torch import Tensor


def to_uint8(images: Tensor) -> Tensor:
    """Float images in [-1, 1] (N, C, H, W) -> uint8, exactly the bytes torchvision's save_image writes.

    Same arithmetic as save_image(normalize=True, value_range=(-1, 1)): so metrics computed from tensors equal
    metrics computed by torch-fidelity from the PNG files gan_lab writes.
    """
    unit = (images.detach().float().clamp(-1, 1) + 1) / 2
    return unit.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
